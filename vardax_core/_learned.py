"""FourDVarNet: a learned variational solver (Fablet et al. 2021), in equinox.

The analysis minimises a variational cost with a *learned* prior,

$$J(z) = e^{a_o}\\,\\overline{\\|m ⊙ (y − h(x(z)))/s_o\\|^2} + e^{a_p}\\,\\overline{\\|z − φ(z)\\|^2},$$

in normalised coordinates `z = (x − μ)/s`, by a fixed number `K` of gradient steps whose
direction a ConvLSTM modulates (`z ← z − (g_k + β ∇J)/(k+1)`, `g_k` the LSTM's output on
the normalised gradient). `φ` is an auto-encoder prior (bilinear, convolutional, MLP or
identity). The state of a window is laid out

- 1-D: `(T, N)` — a state vector over time (Lorenz-63/96): convolutions run over time with
  the `N` components as channels;
- 2-D: `(T, H, W)` — a field over time: the `T` times are channels of 2-D convolutions;
- 2-D multivariate: `(T, C, H, W)` — `T·C` channels.

How the training loss differentiates through the `K` steps is `gradient_mode`:

- `"unrolled"`: back-propagation through every step (`lax.scan`; memory O(K));
- `"one_step"`: the first `K−1` steps run without gradients and only the last step is
  differentiated (Bolte, Pauwels & Vaiter 2023; memory O(1)), packaged as
  `OneStepAdjoint`, an `optimistix.AbstractAdjoint` for `optimistix.fixed_point`;
- `"implicit"`: the implicit function theorem at the iteration's fixed point
  (`optimistix.ImplicitAdjoint` with GMRES; memory O(1)).
"""

import functools as ft
import math

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx

GRADIENT_MODES = ("unrolled", "one_step", "implicit")


# --- batches ---------------------------------------------------------------------------


class Batch1D(eqx.Module):
    """Masked observations of state vectors: `input`, `mask`, `target` `(B, T, N)`.

    `input` holds the observed values where `mask` is true (anything elsewhere); `target`
    the truth (training only, else `None`); `background` an optional first guess
    `(B, T, N)` (the cycle's forecast). With an observation operator (`obs_fn`), `input`
    and `mask` are `(B, T, m)` in observation space.
    """

    input: jax.Array
    mask: jax.Array
    target: jax.Array | None = None
    background: jax.Array | None = None


class Batch2D(Batch1D):
    """Masked observations of 2-D fields: `(B, T, H, W)`."""


class Batch2DMultivar(Batch1D):
    """Masked observations of multivariate 2-D fields: `(B, T, C, H, W)`."""


# --- building blocks -------------------------------------------------------------------


class Conv(eqx.Module):
    """A "same"-padded convolution over 1 or 2 spatial dimensions, `(cin, *spatial) →
    (cout, *spatial)`, computed as one matrix product over the shifted copies of the input
    (im2col). For the few channels and small kernels here this is several times faster on
    CPU than XLA's convolution; the initialisation is `equinox.nn.Conv`'s."""

    weight: jax.Array  # (cout, cin · kernel^dims)
    bias: jax.Array  # (cout,)
    kernel: int = eqx.field(static=True)
    dims: int = eqx.field(static=True)

    def __init__(self, dims, cin, cout, kernel, key):
        ref = eqx.nn.Conv(dims, cin, cout, kernel, padding="SAME", key=key)
        # (cout, cin, k[, k]) → (cout, shifts, cin) flattened, matching `_patches`
        w = jnp.moveaxis(ref.weight, 1, -1).reshape(cout, -1)
        self.weight, self.bias = w, ref.bias.reshape(cout)
        self.kernel, self.dims = kernel, dims

    def _patches(self, x):
        p = self.kernel // 2
        pad = [(0, 0)] + [(p, self.kernel - 1 - p)] * self.dims
        xp = jnp.pad(x, pad)
        shape = x.shape[1:]
        if self.dims == 1:
            shifts = [xp[:, i : i + shape[0]] for i in range(self.kernel)]
        else:
            shifts = [
                xp[:, i : i + shape[0], j : j + shape[1]]
                for i in range(self.kernel)
                for j in range(self.kernel)
            ]
        return jnp.stack(shifts)  # (shifts, cin, *spatial)

    def __call__(self, x):
        patches = self._patches(x).reshape(-1, *x.shape[1:])
        out = jnp.tensordot(self.weight, patches, axes=1)
        return out + self.bias.reshape((-1,) + (1,) * self.dims)


def _conv(dims, cin, cout, kernel, key):
    return Conv(dims, cin, cout, kernel, key)


class AbstractPrior(eqx.Module):
    """A learned prior `φ`: `(channels, *spatial) → (channels, *spatial)`; its cost is
    `‖z − φ(z)‖²` (zero on the manifold `φ` reproduces)."""

    def __call__(self, z):
        raise NotImplementedError


class IdentityPrior(AbstractPrior):
    """`φ(z) = z`: no prior term (the solver fits the observations only)."""

    def __call__(self, z):
        return z


class BilinAEPrior(AbstractPrior):
    """4DVarNet's bilinear auto-encoder: `h = tanh(conv(z))`, then a linear and a
    bilinear (`conv(h) ⊙ conv(h)`) branch, decoded by a 1×1 convolution. `dims`: 1 (over
    time) or 2 (over the field)."""

    encode: Conv
    linear: Conv
    bilin_a: Conv
    bilin_b: Conv
    decode: Conv

    def __init__(self, channels: int, latent_dim: int, *, dims: int, key, kernel: int = 3):
        k = jax.random.split(key, 5)
        self.encode = _conv(dims, channels, latent_dim, kernel, k[0])
        self.linear = _conv(dims, latent_dim, latent_dim, kernel, k[1])
        self.bilin_a = _conv(dims, latent_dim, latent_dim, kernel, k[2])
        self.bilin_b = _conv(dims, latent_dim, latent_dim, kernel, k[3])
        self.decode = _conv(dims, 2 * latent_dim, channels, 1, k[4])

    def __call__(self, z):
        h = jnp.tanh(self.encode(z))
        both = jnp.concatenate([self.linear(h), self.bilin_a(h) * self.bilin_b(h)])
        return self.decode(both)


def BilinAEPrior1D(channels, latent_dim, *, key, kernel=3):
    """Bilinear AE over time for `(T, N)` states (`channels = N`)."""
    return BilinAEPrior(channels, latent_dim, dims=1, key=key, kernel=kernel)


def BilinAEPrior2D(n_time, latent_dim, *, key, kernel=3):
    """Bilinear AE over a 2-D field for `(T, H, W)` states (`T` channels)."""
    return BilinAEPrior(n_time, latent_dim, dims=2, key=key, kernel=kernel)


def BilinAEPrior2DMultivar(n_time, n_vars, latent_dim, *, key, kernel=3):
    """Bilinear AE for `(T, C, H, W)` states (`T·C` channels)."""
    return BilinAEPrior(n_time * n_vars, latent_dim, dims=2, key=key, kernel=kernel)


class ConvAEPrior1D(AbstractPrior):
    """A two-layer convolutional auto-encoder over time: `conv(tanh(conv(z)))`."""

    encode: Conv
    decode: Conv

    def __init__(self, channels: int, latent_dim: int, *, key, kernel: int = 3):
        k1, k2 = jax.random.split(key)
        self.encode = _conv(1, channels, latent_dim, kernel, k1)
        self.decode = _conv(1, latent_dim, channels, kernel, k2)

    def __call__(self, z):
        return self.decode(jnp.tanh(self.encode(z)))


class MLPAEPrior1D(AbstractPrior):
    """A per-time MLP auto-encoder `N → latent → N` (no coupling in time)."""

    encode: eqx.nn.MLP
    decode: eqx.nn.MLP

    def __init__(self, channels: int, latent_dim: int, *, key, hidden_dim: int = 32):
        k1, k2 = jax.random.split(key)
        self.encode = eqx.nn.MLP(channels, latent_dim, hidden_dim, 1, jax.nn.tanh, key=k1)
        self.decode = eqx.nn.MLP(latent_dim, channels, hidden_dim, 1, jax.nn.tanh, key=k2)

    def __call__(self, z):  # z: (N, T)
        return jax.vmap(lambda v: self.decode(self.encode(v)), in_axes=1, out_axes=1)(z)


class ConvLSTM(eqx.Module):
    """The gradient modulator: a convolutional LSTM cell `(g, h, c) → (out, h', c')` on
    `(channels, *spatial)` arrays, with a 1×1 convolution from the hidden state to the
    output."""

    gates: Conv
    out: Conv
    hidden_dim: int = eqx.field(static=True)

    def __init__(self, channels: int, hidden_dim: int, *, dims: int, key, kernel: int = 3):
        k1, k2 = jax.random.split(key)
        self.gates = _conv(dims, channels + hidden_dim, 4 * hidden_dim, kernel, k1)
        self.out = _conv(dims, hidden_dim, channels, 1, k2)
        self.hidden_dim = hidden_dim

    def __call__(self, g, h, c):
        i, f, o, u = jnp.split(self.gates(jnp.concatenate([g, h])), 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return self.out(h), h, c


def _stop_gradients(tree):
    """`tree` with every array's gradient stopped (other leaves untouched)."""
    return jtu.tree_map(lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, tree)


# --- the one-step adjoint --------------------------------------------------------------


class OneStepAdjoint(optx.AbstractAdjoint):
    """One-step differentiation of a fixed-point iteration (Bolte, Pauwels & Vaiter 2023):
    the iterations run with their inputs' gradients stopped, then one more step
    `y ← f(y, args)` is taken differentiably. The gradient with respect to `args` is that
    of the last step at the (frozen) solution — exact for a contraction at its fixed point
    to first order in the contraction rate, and its memory is that of one step whatever the
    number of iterations.

    For `optimistix.fixed_point` (the last step is `y + rewrite(y) = f(y, args)`)."""

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        del tags
        root, rest = primal_fn(_stop_gradients(inputs) + (ft.partial(eqxi.while_loop, kind="lax"),))
        root = jax.lax.stop_gradient(root)
        delta = rewrite_fn(root, None, inputs)  # f(root, args) − root, differentiable in args
        return jtu.tree_map(jnp.add, root, delta), rest


def _implicit_solver(size: int) -> lx.AbstractLinearSolver:
    """`I − ∂f/∂z` may be near-singular (the LSTM sees the normalised gradient, blind to its
    size): a least-squares SVD solve for small windows, LSMR (iterative least squares, which
    GMRES is not: it stagnates here) for large ones."""
    if size <= 4096:
        return lx.SVD()
    return lx.LSMR(rtol=1e-5, atol=1e-5)


# --- the network -----------------------------------------------------------------------


class FourDVarNet(eqx.Module):
    """The learned solver; build it with `FourDVarNet1D` or `FourDVarNet2D`.

    `net(batch, obs_operator=None) -> (B, *state)` analyses a batch (without an operator,
    `input` is in state space); `net.solve(y, mask, x_init, obs_operator=None)` one window;
    `obs_operator` is the cycle's `H` on one flat state.
    """

    prior: AbstractPrior
    grad_mod: ConvLSTM
    log_obs_weight: jax.Array
    log_prior_weight: jax.Array
    grad_weight: jax.Array
    mean: jax.Array  # per component (1-D) or scalar (2-D): normalisation, not trained
    scale: jax.Array
    obs_scale: jax.Array
    state_shape: tuple[int, ...] = eqx.field(static=True)
    dims: int = eqx.field(static=True)
    n_solver_steps: int = eqx.field(static=True)
    gradient_mode: str = eqx.field(static=True)

    def __check_init__(self):
        if self.gradient_mode not in GRADIENT_MODES:
            raise ValueError(
                f"FourDVarNet: gradient_mode must be one of {GRADIENT_MODES}, "
                f"got {self.gradient_mode!r}"
            )
        if self.n_solver_steps < 2:
            raise ValueError(f"FourDVarNet: n_solver_steps must be >= 2, got {self.n_solver_steps}")

    # layout: (T, N) <-> (N, T) for 1-D; (T, H, W) / (T, C, H, W) <-> (T·C, H, W) for 2-D
    def _to_channels(self, z):
        if self.dims == 1:
            return z.T
        return z.reshape(-1, *z.shape[-2:])

    def _from_channels(self, z):
        if self.dims == 1:
            return z.T
        return z.reshape(self.state_shape)

    def normalise(self, x):
        return (x - jax.lax.stop_gradient(self.mean)) / jax.lax.stop_gradient(self.scale)

    def denormalise(self, z):
        return jax.lax.stop_gradient(self.mean) + jax.lax.stop_gradient(self.scale) * z

    def prior_cost(self, z):
        """`‖z − φ(z)‖²` (mean over the window) of normalised states `z`."""
        zc = self._to_channels(z.reshape(self.state_shape))
        return jnp.mean((zc - self.prior(zc)) ** 2)

    def obs_fn(self, obs_operator):
        """`(T, *state) → (T, m)`: the observation operator on every window time."""
        if obs_operator is None:
            return None
        return lambda x: jax.vmap(obs_operator)(x.reshape(x.shape[0], -1))

    def cost(self, z, y, mask, obs_fn):
        """The variational cost of normalised states `z`."""
        x = self.denormalise(z)
        predicted = x if obs_fn is None else obs_fn(x)
        r = jnp.where(mask, (y - predicted) / jax.lax.stop_gradient(self.obs_scale), 0.0)
        n_obs = jnp.maximum(jnp.sum(mask), 1)
        obs_term = jnp.sum(r**2) / n_obs
        return jnp.exp(self.log_obs_weight) * obs_term + jnp.exp(
            self.log_prior_weight
        ) * self.prior_cost(z)

    def _step(self, carry, data):
        z, h, c, k = carry
        y, mask, obs_fn = data
        g = jax.grad(self.cost)(z, y, mask, obs_fn)
        g_norm = jnp.sqrt(jnp.mean(g**2) + 1e-12)
        out, h, c = self.grad_mod(self._to_channels(g / g_norm), h, c)
        update = (self._from_channels(out) + self.grad_weight * g) / (k + 1.0)
        return z - update, h, c, k + 1.0

    def _initial(self, x_init):
        z = self.normalise(x_init)
        spatial = self._to_channels(z).shape[1:]
        h = jnp.zeros((self.grad_mod.hidden_dim, *spatial), z.dtype)
        return z, h, h, jnp.zeros((), z.dtype)

    def solve(self, y, mask, x_init, obs_operator=None):
        """Analyses one window. **Arguments:** `y`, `mask` `(T, …)` (state space, or `(T, m)`
        with `obs_operator`, which takes one flat state); `x_init` `(T, *state)` the first
        guess. **Returns** `(T, *state)`."""
        obs_fn = self.obs_fn(obs_operator)
        shape_in = x_init.shape  # flat states (T, n) of a 2-D model are accepted too
        return self._solve(y, mask, x_init.reshape(self.state_shape), obs_fn).reshape(shape_in)

    def _solve(self, y, mask, x_init, obs_fn):
        carry = self._initial(x_init)
        K = self.n_solver_steps
        data = (y, mask, obs_fn)

        def run(net, cr, steps):
            return jax.lax.scan(lambda c, _: (net._step(c, data), None), cr, None, length=steps)[0]

        if self.gradient_mode == "unrolled":
            return self.denormalise(run(self, carry, K)[0])
        exact = optx.FixedPointIteration(rtol=0.0, atol=0.0)  # exactly the step budget
        if self.gradient_mode == "one_step":
            # the network travels in `args` so that the adjoint sees its parameters
            def fn(cr, args):
                net, yy, mm = args
                return net._step(cr, (yy, mm, obs_fn))

            sol = optx.fixed_point(
                fn,
                exact,
                carry,
                (self, y, mask),
                max_steps=K - 1,
                adjoint=OneStepAdjoint(),
                throw=False,
            )
            return self.denormalise(sol.value[0])
        # implicit: K − 1 steps without gradients, then the last step's map of the state
        # (its LSTM memory and step index frozen, so that it has a fixed point)
        # differentiated by the implicit function theorem
        z, h, c, k = run(_stop_gradients(self), carry, K - 1)

        def last(zz, args):
            net, obs_y, obs_mask = args
            return net._step((zz, h, c, k), (obs_y, obs_mask, obs_fn))[0]

        sol = optx.fixed_point(
            last,
            exact,
            z,
            (self, y, mask),
            max_steps=1,
            adjoint=optx.ImplicitAdjoint(_implicit_solver(z.size)),
            throw=False,
        )
        return self.denormalise(sol.value)

    def initial_guess(self, y, mask, background=None):
        """The solver's start: the background, else the observations where they exist and
        the climatological mean elsewhere (identity observations)."""
        if background is not None:
            return background
        return jnp.where(mask, y, jnp.broadcast_to(self.mean, y.shape))

    def __call__(self, batch: Batch1D, obs_operator=None):
        background = batch.background
        if background is None and obs_operator is not None:
            raise ValueError("FourDVarNet: a batch with an observation operator needs a background")

        def one(y, m, b):
            return self.solve(y, m, self.initial_guess(y, m, b), obs_operator)

        if background is None:
            return jax.vmap(lambda y, m: one(y, m, None))(batch.input, batch.mask)
        return jax.vmap(one)(batch.input, batch.mask, background)


def _assemble(prior, grad_mod, state_shape, dims, mean, scale, obs_scale, K, mode):
    """A FourDVarNet with its initial cost weights and its normalisation (`mean`, `scale`
    broadcast to one value per channel of the state's last axes; `obs_scale` defaults to
    `scale`)."""
    tail = state_shape[1:] if dims == 1 else ()
    mean = jnp.broadcast_to(jnp.asarray(mean, float), tail)
    scale = jnp.broadcast_to(jnp.asarray(scale, float), tail)
    return FourDVarNet(
        prior=prior,
        grad_mod=grad_mod,
        log_obs_weight=jnp.array(0.0),
        log_prior_weight=jnp.array(0.0),
        grad_weight=jnp.array(0.1),
        mean=mean,
        scale=scale,
        obs_scale=scale if obs_scale is None else jnp.asarray(obs_scale, float),
        state_shape=tuple(state_shape),
        dims=dims,
        n_solver_steps=K,
        gradient_mode=mode,
    )


def FourDVarNet1D(
    state_dim: int,
    n_time: int,
    *,
    key,
    latent_dim: int = 8,
    hidden_dim: int = 16,
    n_solver_steps: int = 10,
    prior: str | AbstractPrior = "bilinear",
    gradient_mode: str = "unrolled",
    mean=0.0,
    scale=1.0,
    obs_scale=None,
    kernel: int = 3,
) -> FourDVarNet:
    """A FourDVarNet for `(T, N)` windows of state vectors. `prior`: `"bilinear"`,
    `"conv"`, `"mlp"`, `"identity"` or a prior module; `mean`, `scale`: per-component
    normalisation (climatology); `obs_scale`: of the observations (default `scale`);
    `kernel`: the convolutions' width in time (each solver step reaches that far)."""
    kp, kg = jax.random.split(key)
    if isinstance(prior, str):
        makers = {
            "bilinear": lambda: BilinAEPrior1D(state_dim, latent_dim, key=kp, kernel=kernel),
            "conv": lambda: ConvAEPrior1D(state_dim, latent_dim, key=kp, kernel=kernel),
            "mlp": lambda: MLPAEPrior1D(state_dim, latent_dim, key=kp),
            "identity": IdentityPrior,
        }
        if prior not in makers:
            raise ValueError(f"FourDVarNet1D: prior must be one of {list(makers)}, got {prior!r}")
        prior = makers[prior]()
    grad_mod = ConvLSTM(state_dim, hidden_dim, dims=1, key=kg, kernel=kernel)
    return _assemble(
        prior,
        grad_mod,
        (n_time, state_dim),
        1,
        mean,
        scale,
        obs_scale,
        n_solver_steps,
        gradient_mode,
    )


def FourDVarNet2D(
    shape: tuple[int, ...],
    n_time: int,
    *,
    key,
    latent_dim: int = 16,
    hidden_dim: int = 16,
    n_solver_steps: int = 10,
    prior: str | AbstractPrior = "bilinear",
    gradient_mode: str = "unrolled",
    mean=0.0,
    scale=1.0,
    obs_scale=None,
) -> FourDVarNet:
    """A FourDVarNet for `(T, H, W)` fields (`shape = (H, W)`) or multivariate
    `(T, C, H, W)` fields (`shape = (C, H, W)`). `prior`: `"bilinear"`, `"identity"` or a
    prior module; `mean`, `scale`: scalars (the field's climatology)."""
    if len(shape) not in (2, 3):
        raise ValueError(f"FourDVarNet2D: shape must be (H, W) or (C, H, W), got {shape}")
    channels = n_time * math.prod(shape[:-2])
    kp, kg = jax.random.split(key)
    if isinstance(prior, str):
        if prior == "bilinear":
            prior = BilinAEPrior(channels, latent_dim, dims=2, key=kp)
        elif prior == "identity":
            prior = IdentityPrior()
        else:
            raise ValueError(
                f"FourDVarNet2D: prior must be 'bilinear' or 'identity', got {prior!r}"
            )
    grad_mod = ConvLSTM(channels, hidden_dim, dims=2, key=kg)
    return _assemble(
        prior,
        grad_mod,
        (n_time, *shape),
        2,
        mean,
        scale,
        obs_scale,
        n_solver_steps,
        gradient_mode,
    )
