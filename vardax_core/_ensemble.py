"""Ensemble data assimilation: the stochastic EnKF, the ETKF, the local ETKF, the iterative
ensemble Kalman smoother and hybrid ensemble-variational analysis, with their inflation
and localisation — all `AbstractEnsembleMethod`s.

An ensemble method takes the background ensemble over the window (`(N, T+1, n)`, each
member forecast from the previous analysis ensemble) and the window's observations, and
returns an `Analysis` whose `ensemble` is the analysis ensemble and whose `trajectory` is
its mean. Observations at several window times are assimilated together, as the
asynchronous (4D) filters do (Hunt et al. 2007, Sakov et al. 2010): the members'
predicted observations at each time give the anomalies, and one transform in ensemble
space updates the whole window — at the window end exactly the filter's analysis.

Notation (as in DAPPER): `A` the background anomalies (members minus their mean), `Y`
the predicted observations' anomalies and `d` the innovation of the mean, both whitened
by `R^{-1/2}` and zero where nothing was observed; `w` weights in ensemble space.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ._analysis import (
    AbstractAnalysisMethod,
    Analysis,
    AnalysisResult,
    ObsWindow,
    guarded,
    map_times,
    obs_cost,
)
from ._cov import AbstractCovariance
from ._dynamics import AbstractForwardModel
from ._obs import AbstractObsOperator

# --- keys, inflation, localisation ------------------------------------------------------------


def cycle_key(seed: int, index, stream: int = 0) -> jax.Array:
    """The random key of cycle `index` of an experiment of `seed`, for `stream` (0: the
    initial ensemble, 1: the analysis): a cycle's random numbers depend on nothing else,
    so a resumed run draws what an uninterrupted one drew."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), index), stream)


def initial_ensemble(x, prior_cov: AbstractCovariance, key, members: int) -> jax.Array:
    """`members` states `x + B^{1/2} ξ`, `ξ ~ N(0, I)`, recentred on `x` (`(N, n)`): the
    first cycle's ensemble, spread as the background error `B` says."""
    xi = jax.random.normal(key, (members, prior_cov.size), jnp.asarray(x).dtype)
    noise = jax.vmap(prior_cov.sqrt_mv)(xi)
    return x + noise - jnp.mean(noise, axis=0)


def climatological_ensemble(states, key, members: int) -> jax.Array:
    """`members` distinct states drawn at random from `states` `(S, n)` (a free model run):
    the first ensemble when no first guess is known — spread as the model's variability,
    where members tight around the climatological mean would trust it over the
    observations and never reach the truth."""
    states = jnp.asarray(states)
    if members > states.shape[0]:
        raise ValueError(
            f"climatological_ensemble: {members} members from {states.shape[0]} states"
        )
    return states[jax.random.choice(key, states.shape[0], (members,), replace=False)]


class Inflation(eqx.Module):
    """What keeps an ensemble's spread honest, applied to the analysis anomalies (as
    DAPPER's `infl`): `factor` multiplies them; then relaxation to prior spread (RTPS,
    Whitaker & Hamill 2012) scales them at each state variable by
    `1 + rtps·(σ_b − σ_a)/σ_a`."""

    factor: float = eqx.field(static=True, default=1.0)
    rtps: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if not self.factor >= 1.0:
            raise ValueError(f"Inflation: factor must be >= 1, got {self.factor}")
        if not 0.0 <= self.rtps <= 1.0:
            raise ValueError(f"Inflation: rtps must be in [0, 1], got {self.rtps}")

    def __call__(self, background, analysis) -> jax.Array:
        """The inflated analysis ensemble (`(N, …, n)`, members first)."""
        mean = jnp.mean(analysis, axis=0)
        anomalies = self.factor * (analysis - mean)
        if self.rtps:
            sigma_b = jnp.std(background, axis=0, ddof=1)
            sigma_a = jnp.std(anomalies, axis=0, ddof=1)
            safe = jnp.where(sigma_a > 0, sigma_a, 1.0)
            scale = jnp.where(sigma_a > 0, 1.0 + self.rtps * (sigma_b - sigma_a) / safe, 1.0)
            anomalies = anomalies * scale
        return mean + anomalies


def gaspari_cohn(r) -> jax.Array:
    """The Gaspari–Cohn (1999, eq. 4.10) fifth-order taper at `r` = distance / half-width:
    1 at 0, 0 from 2 on."""
    r = jnp.abs(r)
    inner = 1 - 5 / 3 * r**2 + 5 / 8 * r**3 + 1 / 2 * r**4 - 1 / 4 * r**5
    outer = 4 - 5 * r + 5 / 3 * r**2 + 5 / 8 * r**3 - 1 / 2 * r**4 + 1 / 12 * r**5 - 2 / (3 * r)
    return jnp.where(r <= 1, inner, jnp.where(r < 2, outer, 0.0))


_GC_HALF_WIDTH = 1.82
"""Gaspari–Cohn half-width per unit of `radius` (DAPPER's constant, so that a radius means
what it means there): the taper is 0.63 at the radius, near a Gaussian of that standard
deviation, and zero beyond 3.64 radii."""


class Localisation(eqx.Module):
    """Tapers the influence of an observation by its distance from a state variable:
    Gaspari–Cohn of half-width `1.82 × radius` — 0.63 at `radius`, zero beyond
    `3.64 × radius` (DAPPER's convention).

    Distances are in the model's coordinates on its regular grid of `shape` (`spacing`
    per axis; `periodic`: the shorter way round, a ring's distance for Lorenz-96).
    `Localisation.of(model, radius)` takes all of it from the model.
    """

    radius: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True, converter=tuple)
    spacing: tuple[float, ...] = eqx.field(static=True, converter=tuple)
    periodic: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not self.radius > 0:
            raise ValueError(f"Localisation: radius must be > 0, got {self.radius}")
        if len(self.spacing) != len(self.shape):
            raise ValueError("Localisation: one spacing per axis of shape")

    @classmethod
    def of(cls, model: AbstractForwardModel, radius: float) -> "Localisation":
        from ._obs import RegularGrid

        grid = RegularGrid.of(model)
        return cls(radius, grid.shape, grid.spacing, grid.periodic)

    def state_positions(self) -> jax.Array:
        """`(n, d)` grid positions of the state variables (row-major)."""
        index = np.unravel_index(np.arange(int(np.prod(self.shape))), self.shape)
        return jnp.asarray(np.stack(index, axis=-1), float)

    def distance(self, a, b) -> jax.Array:
        """Distances `(…a, …b)` between grid positions `a` `(…, d)` and `b` `(…, d)`."""
        size = jnp.asarray(self.shape, float)
        delta = jnp.abs(a[..., None, :] - b[None, ...] if a.ndim == 2 else a[:, None] - b)
        if self.periodic:
            delta = jnp.minimum(delta, size - delta)
        return jnp.sqrt(jnp.sum((delta * jnp.asarray(self.spacing)) ** 2, axis=-1))

    def taper(self, obs_positions) -> jax.Array:
        """`(n, p)` coefficients of the `p` observations at `obs_positions` `(p, d)` for
        each state variable."""
        d = self.distance(self.state_positions(), obs_positions)
        return gaspari_cohn(d / self._width)

    def correlation_sqrt(self) -> jax.Array:
        """`L^{1/2}` `(n, n)` of the state's localisation matrix `L_ij = ρ(d_ij)` (symmetric:
        forms and decomposes an `n × n` matrix; negative eigenvalues, where the taper's
        support wraps round a small periodic grid, clipped to 0)."""
        x = self.state_positions()
        L = gaspari_cohn(self.distance(x, x) / self._width)
        lam, V = jnp.linalg.eigh(L)
        return (V * jnp.sqrt(jnp.clip(lam, 0.0))) @ V.T

    def sqrt_operator(self) -> "LocalisationSqrt":
        """`L^{1/2}` as an operator on states: on a periodic grid by FFT (`L` is circulant
        there, `O(n log n)` and no `n × n` matrix), else the dense `correlation_sqrt`."""
        if not self.periodic:
            return LocalisationSqrt(self.shape, matrix=self.correlation_sqrt())
        origin = jnp.zeros((1, len(self.shape)))
        row = gaspari_cohn(self.distance(origin, self.state_positions())[0] / self._width)
        axes = tuple(range(len(self.shape)))
        eigenvalues = jnp.fft.rfftn(row.reshape(self.shape), axes=axes).real
        return LocalisationSqrt(self.shape, spectrum=jnp.sqrt(jnp.clip(eigenvalues, 0.0)))

    @property
    def _width(self) -> float:
        return _GC_HALF_WIDTH * self.radius


class LocalisationSqrt(eqx.Module):
    """`L^{1/2}` of a localisation matrix applied to states `(…, n)` (row-major on the grid
    of `shape`): through its eigenvalues' square roots in Fourier space (`spectrum`, the
    half-spectrum of `rfftn`: `L` circulant on a periodic grid) or a dense `matrix`. Both
    are the symmetric square root with negative eigenvalues clipped to 0."""

    shape: tuple[int, ...] = eqx.field(static=True, converter=tuple)
    spectrum: jax.Array | None = None
    matrix: jax.Array | None = None

    def __call__(self, v) -> jax.Array:
        if self.matrix is not None:
            return v @ self.matrix.T
        lead, axes = v.shape[:-1], tuple(range(-len(self.shape), 0))
        grid = v.reshape(*lead, *self.shape)
        out = jnp.fft.irfftn(self.spectrum * jnp.fft.rfftn(grid, axes=axes), self.shape, axes)
        return out.reshape(*lead, -1)


# --- the ensemble in observation space --------------------------------------------------------


def observed_anomalies(
    obs_operator: AbstractObsOperator, obs_cov: AbstractCovariance, ensemble, obs: ObsWindow
):
    """The ensemble seen through the window's observations, whitened: **returns**
    `(Y (N, p), d (p,), mask (p,))` over the `p = (T+1)·m` window observations — each
    member's predicted-observation anomaly and the innovation of their mean, zero where
    nothing was observed."""

    def at_time(H, R, members, y, mask):
        predicted = jax.vmap(H)(members)
        mean = jnp.mean(predicted, axis=0)
        Y = jax.vmap(lambda v: R.masked_whiten(v, mask))(predicted - mean)
        d = R.masked_whiten(jnp.where(mask, y - mean, 0.0), mask)
        return Y, d

    per_time = (jnp.swapaxes(ensemble, 0, 1), obs.values, obs.mask)
    Y, d = map_times(at_time, obs, obs_operator, obs_cov, *per_time)
    N = ensemble.shape[0]
    return jnp.swapaxes(Y, 0, 1).reshape(N, -1), d.reshape(-1), obs.mask.reshape(-1)


def observation_positions(obs_operator: AbstractObsOperator, obs: ObsWindow, shape):
    """`(p, d)` grid positions of the window's observations (`ValueError` when the
    operator does not give them)."""
    positions = map_times(
        lambda H, R, _: _positions_of(H, shape), obs, obs_operator, None, obs.mask
    )
    return positions.reshape(-1, positions.shape[-1])


def _positions_of(H: AbstractObsOperator, shape):
    p = H.positions(shape)
    if p is None:
        raise ValueError(
            f"localisation needs the observations' positions, and {type(H).__name__} does "
            "not give them: define its positions(shape) (see AbstractObsOperator.positions)"
        )
    return jnp.asarray(p, float)


def transform(Y, d, N: int):
    """The ETKF's analysis in ensemble space (Hunt et al. 2007): the mean's weights
    `w̄ = P_w Y d` and the symmetric square-root transform `W = ((N−1) P_w)^{1/2}` with
    `P_w = (Y Yᵀ + (N−1) I)^{-1}` (`Y` `(…, N, p)`, `d` `(…, p)`; batched over leading
    axes)."""
    C = Y @ jnp.swapaxes(Y, -1, -2)
    return _weights(C, Y @ d[..., None], N)


def _weights(C, Yd, N: int):
    A = jnp.eye(N, dtype=C.dtype) + C / (N - 1)
    if C.ndim > 2:  # a batch of local analyses: one batched eigh is cheaper than iterating
        lam, V = jnp.linalg.eigh(A)
        W = (V * lam[..., None, :] ** -0.5) @ jnp.swapaxes(V, -1, -2)
    else:
        _, W = sqrt_pair(A)  # ((N−1) P_w)^{1/2} = A^{-1/2}
    return (W @ (W @ Yd))[..., 0] / (N - 1), W


def sqrt_pair(A, tolerance: float = 1e-13, max_iterations: int = 100):
    """`(A^{1/2}, A^{-1/2})` of symmetric positive definite `A` `(…, N, N)` with eigenvalues
    at least 1 (`I` plus a positive semidefinite matrix: every ensemble-space matrix here), by
    the coupled Newton–Schulz iteration on `A/c`, `c` a bound of its largest eigenvalue
    (products of `N × N` matrices only: on a CPU a small `eigh` costs what some twenty of
    its steps do). Converged when `‖T − I‖_F < tolerance·N`."""
    I = jnp.eye(A.shape[-1], dtype=A.dtype)
    c = 1.0 + jnp.sqrt(jnp.sum((A - I) ** 2, axis=(-2, -1), keepdims=True))

    def step(state):
        Y, Z, k, _ = state
        T = 0.5 * (3.0 * I - Z @ Y)
        return Y @ T, T @ Z, k + 1, jnp.max(jnp.sqrt(jnp.sum((T - I) ** 2, axis=(-2, -1))))

    def going(state):
        *_, k, err = state
        return (k < max_iterations) & (err > tolerance * A.shape[-1])

    start = (A / c, jnp.broadcast_to(I, A.shape), 0, jnp.asarray(jnp.inf, A.dtype))
    Y, Z, _, _ = jax.lax.while_loop(going, step, start)
    root, inverse = Y * jnp.sqrt(c), Z / jnp.sqrt(c)
    symmetric = lambda M: 0.5 * (M + jnp.swapaxes(M, -1, -2))  # noqa: E731
    return symmetric(root), symmetric(inverse)


def _helmert(N: int, dtype) -> jax.Array:
    """`(N, N−1)` orthonormal columns orthogonal to `1` (the Helmert basis)."""
    U = np.zeros((N, N - 1))
    for k in range(1, N):
        U[:k, k - 1] = 1.0
        U[k, k - 1] = -float(k)
        U[:, k - 1] /= np.sqrt(k * (k + 1.0))
    return jnp.asarray(U, dtype)


def mean_preserving_rotation(key, N: int, dtype=jnp.float64) -> jax.Array:
    """A random orthogonal `N × N` matrix `Q` with `Q 1 = 1`: mixes the members without
    moving their mean or their covariance (as DAPPER's `rot=True`). The product of two
    Householder reflections `I − 2 v vᵀ` with random unit `v ⟂ 1`: a rotation by a random
    angle in a random plane of the complement of `1`, fresh each cycle — `O(N²)`, where
    a full random orthogonal matrix costs an `O(N³)` factorisation that on a CPU cost more
    than the ETKF's own analysis (`bench/ensemble.py`: our rotated ETKF's RMSE is DAPPER's)."""
    G = jax.random.normal(key, (2, N - 1), dtype) @ _helmert(N, dtype).T
    v = G / jnp.linalg.norm(G, axis=1, keepdims=True)
    reflect = lambda Q, u: Q - 2.0 * jnp.outer(u, u @ Q)  # noqa: E731
    return reflect(reflect(jnp.eye(N, dtype=dtype), v[0]), v[1])


def rotated(transform, key, rotate: bool) -> jax.Array:
    """The ensemble transform (`(…, N, N)`, rows the analysis members) mixed by one
    `mean_preserving_rotation` of `key` when `rotate` (shared by every batch entry: local
    transforms stay coherent in space)."""
    if not rotate:
        return transform
    N = transform.shape[-1]
    return mean_preserving_rotation(key, N, transform.dtype) @ transform


def newest_rows(obs: ObsWindow, new_rows: int | None, whole=False) -> ObsWindow:
    """The window with only its last `new_rows` times' observations (`None`, or `whole`
    true: all): those not assimilated by earlier windows when windows slide by `new_rows`
    steps (single assimilation of each observation, as DAPPER's iEnKS with `Shift` =
    `new_rows`). `whole` (traceable): no earlier window assimilated any of them — the first
    window from a cold start."""
    if new_rows is None:
        return obs
    rows = (jnp.arange(obs.n_times) > obs.n_times - 1 - new_rows) | whole
    return eqx.tree_at(lambda o: o.mask, obs, obs.mask & rows[:, None])


def _observed(method, ensemble, obs: ObsWindow):
    """`observed_anomalies` over the method's `obs_rows` of the window."""
    if method.obs_rows is not None:
        ensemble, obs = ensemble[:, jnp.asarray(method.obs_rows)], obs.take(method.obs_rows)
    return observed_anomalies(method.obs_operator, method.obs_cov, ensemble, obs)


def _standard_normal(key, shape, dtype) -> jax.Array:
    """`N(0, 1)` draws of `shape` in `dtype`, drawn in single precision: perturbations need
    no more, and on a CPU a double-precision erf⁻¹ costs five times as much. Drawn once (an
    optimisation barrier): left to fusion, each consumer would recompute the erf⁻¹."""
    draws = jax.random.normal(key, shape, jnp.float32)
    return jax.lax.optimization_barrier(draws).astype(dtype)


def _split(ensemble):
    mean = jnp.mean(ensemble, axis=0)
    return mean, ensemble - mean


# --- the methods ---------------------------------------------------------------------------------


class AbstractEnsembleMethod(AbstractAnalysisMethod):
    """An ensemble analysis: `method(background, obs, key) -> Analysis`, `background` the
    `(N, T+1, n)` background ensemble over the window, `key` the cycle's random key.

    `prior_cov` is the background error of the first cycle's ensemble
    (`initial_ensemble`) and what the gate measures increments by; `members` is `N`;
    `inflation` is applied to every analysis ensemble; `obs_rows` (the filters: ETKF, EnKF,
    LETKF) names the window times that can hold observations (`None`: all) — what the
    observation space of a window of many steps observed at a few is reduced to.
    The returned `Analysis` has the
    analysis ensemble in `ensemble` and its mean in `trajectory`; its costs are the
    observation term `½ Σ ‖y − H(x̄)‖²_R` of the background and the analysis mean.
    """

    members: eqx.AbstractVar[int]
    inflation: eqx.AbstractVar[Inflation]
    ensemble = True
    window_observations = True
    four_dimensional = False

    def __check_init__(self):  # equinox runs it for every subclass, before their own
        self._check_config()
        if self.members < 2:
            raise ValueError(f"{type(self).__name__}: members must be >= 2, got {self.members}")

    @property
    def state_size(self):
        return self.obs_operator.state_size

    def __call__(self, background, obs: ObsWindow, key=None) -> Analysis:
        """**Arguments:** `background` `(N, T+1, n)`; `obs` an `ObsWindow` of `T+1` times;
        `key` a random key (`None`: key 0).

        **Returns** an `Analysis` with the analysis `ensemble`.
        """
        name = type(self).__name__
        background = jnp.asarray(background)
        expected = (self.members, obs.n_times, self.state_size)
        if background.shape != expected:
            raise ValueError(
                f"{name}: background ensemble has shape {tuple(background.shape)}, expected "
                f"(members, window times, state) = {expected}"
            )
        if obs.obs_size != self.obs_operator.obs_size:
            raise ValueError(
                f"{name}: observations have {obs.obs_size} per time, obs_operator returns "
                f"{self.obs_operator.obs_size}"
            )
        key = jax.random.PRNGKey(0) if key is None else key
        mean = jnp.mean(background, axis=0)
        return guarded(mean, lambda E, o: self._analyse(E, o, key), obs, ensemble=background)

    def _finish(self, background, analysis, obs, iterations=0, result=None, inflate=True):
        """The `Analysis` of an analysis ensemble, inflated (unless `inflate` is false: a
        method that inflated it at its own time already)."""
        if inflate:
            analysis = self.inflation(background, analysis)
        xb, xa = jnp.mean(background, axis=0), jnp.mean(analysis, axis=0)
        return Analysis(
            trajectory=xa,
            cost_before=obs_cost(self.obs_operator, self.obs_cov, xb, obs),
            cost_after=obs_cost(self.obs_operator, self.obs_cov, xa, obs),
            iterations=jnp.asarray(iterations),
            result=AnalysisResult.successful if result is None else result,
            ensemble=analysis,
        )


class ETKF(AbstractEnsembleMethod):
    """The ensemble transform Kalman filter (Bishop et al. 2001; Hunt et al. 2007): the
    analysis ensemble `x̄ + (w̄ + W) A` from the transform in ensemble space
    (`transform`), optionally followed by a random mean-preserving rotation of the members
    (`rotate`)."""

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    members: int = eqx.field(static=True)
    inflation: Inflation = Inflation()
    obs_rows: tuple[int, ...] | None = eqx.field(static=True, default=None)
    rotate: bool = eqx.field(static=True, default=False)

    def _analyse(self, background, obs, key):
        N = self.members
        mean, A = _split(background)
        Y, d, _ = _observed(self, background, obs)
        w, W = transform(Y, d, N)
        T = w[None, :] + rotated(W, key, self.rotate)
        return self._finish(background, mean + jnp.einsum("ij,jtn->itn", T, A), obs)


class EnKF(AbstractEnsembleMethod):
    """The stochastic EnKF with perturbed observations (Burgers et al. 1998): each member
    assimilates the observations plus a draw of their error (centred over the members),
    `x_i + A^T (Y Yᵀ + (N−1) I)^{-1} Y (d + ε_i − Y_i)` in whitened observation space (the
    `N × N` matrix by its Cholesky factor)."""

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    members: int = eqx.field(static=True)
    inflation: Inflation = Inflation()
    obs_rows: tuple[int, ...] | None = eqx.field(static=True, default=None)

    def _analyse(self, background, obs, key):
        N = self.members
        _, A = _split(background)
        Y, d, mask = _observed(self, background, obs)
        eps = _standard_normal(key, Y.shape, Y.dtype)
        eps = jnp.where(mask, eps - jnp.mean(eps, axis=0), 0.0)
        D = d[None, :] + eps - Y  # each member's perturbed, whitened innovation
        C = Y @ Y.T + (N - 1) * jnp.eye(N, dtype=Y.dtype)  # symmetric positive definite
        # member i's increment Σ_j weights[i, j] A_j, weights = D Yᵀ C⁻¹ = D Yᵀ L⁻ᵀ L⁻¹
        L = jnp.linalg.cholesky(C)
        right = functools.partial(jax.lax.linalg.triangular_solve, L, left_side=False, lower=True)
        weights = right(right(D @ Y.T, transpose_a=True))  # B L⁻ᵀ, then that times L⁻¹
        increments = jnp.einsum("ij,jtn->itn", weights, A)
        return self._finish(background, background + increments, obs)


class LETKF(AbstractEnsembleMethod):
    """The local ETKF (Hunt et al. 2007): one ETKF per state variable, each with the
    observations' inverse errors tapered by `localisation` around it (`R⁻¹ ρ`), all
    variables at once (batched in ensemble space); `rotate` as for the `ETKF`, one
    rotation for all the local transforms."""

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    members: int = eqx.field(static=True)
    localisation: Localisation
    inflation: Inflation = Inflation()
    obs_rows: tuple[int, ...] | None = eqx.field(static=True, default=None)
    rotate: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if int(np.prod(self.localisation.shape)) != self.state_size:
            raise ValueError(
                f"LETKF: localisation grid {self.localisation.shape} does not hold a state "
                f"of size {self.state_size}"
            )

    def _analyse(self, background, obs, key):
        N = self.members
        mean, A = _split(background)
        Y, d, _ = _observed(self, background, obs)
        shape = self.localisation.shape
        seen = obs if self.obs_rows is None else obs.take(self.obs_rows)
        rho = self.localisation.taper(observation_positions(self.obs_operator, seen, shape))
        C = jnp.einsum("ap,ip,bp->iab", Y, rho, Y)  # (n, N, N): Y diag(ρ_i) Yᵀ
        Yd = jnp.einsum("ap,ip,p->ia", Y, rho, d)[..., None]
        w, W = _weights(C, Yd, N)  # (n, N), (n, N, N)
        T = w[:, None, :] + rotated(W, key, self.rotate)  # per variable i: T_i[a, b]
        analysis = mean + jnp.einsum("iab,bti->ati", T, A)
        return self._finish(background, analysis, obs)


class IEnKS(AbstractEnsembleMethod):
    """The iterative ensemble Kalman smoother (Bocquet & Sakov 2014), its "Sqrt" form
    with Gauss–Newton iterations in ensemble space (iEnKF when the window holds one
    observation time).

    The control is the weights `w` of the ensemble at the window start, `x_0 = x̄_0 + A_0 w`;
    each iteration forecasts the members `x̄_0 + (w + T) A_0` over the window, regresses
    their observations on the ensemble (`T⁻¹ Y`), and takes a Gauss–Newton step of
    `J(w) = ½(N−1)|w|² + ½ Σ_t ‖y_t − H(M_t(x_0))‖²_R`, with `T = ((N−1) P_w)^{1/2}` —
    until `|δw|² < tolerance · N` or `max_iterations`. The analysis ensemble is the
    updated window-start ensemble, inflated, forecast over the window.

    `new_rows`: how many of the window's last times hold observations not assimilated
    before (`None`: all of them) — a window that slides by fewer steps than its length,
    DAPPER's iEnKS with `Lag` = window and `Shift` = `new_rows` (single assimilation:
    each observation is assimilated once). The `Cycle` masks the window to them
    (`newest_rows`; the whole first window of a cold start); the method assimilates what
    its window holds.
    """

    model: AbstractForwardModel
    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    members: int = eqx.field(static=True)
    inflation: Inflation = Inflation()
    max_iterations: int = eqx.field(static=True, default=10)
    tolerance: float = eqx.field(static=True, default=1e-5)
    new_rows: int | None = eqx.field(static=True, default=None)
    rotate: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.max_iterations < 1:
            raise ValueError(f"IEnKS: max_iterations must be >= 1, got {self.max_iterations}")
        if self.new_rows is not None and self.new_rows < 1:
            raise ValueError(f"IEnKS: new_rows must be >= 1, got {self.new_rows}")

    def _analyse(self, background, obs, key):
        N, n_steps = self.members, obs.n_times - 1
        x0, A0 = _split(background[:, 0])
        forecast = jax.vmap(lambda x: self.model.rollout(x, n_steps))

        def step(carry):
            k, w, T, Tinv, E, _ = carry
            Y, d, _ = observed_anomalies(self.obs_operator, self.obs_cov, E, obs)
            Y0 = Tinv @ Y  # the anomalies "de-conditioned" by the current transform
            # (Y0 Y0ᵀ + (N−1) I) = (N−1) A: T = A^{-1/2}, T⁻¹ = A^{1/2}, the step A⁻¹ g/(N−1)
            Tinv, T = sqrt_pair(jnp.eye(N, dtype=Y.dtype) + Y0 @ Y0.T / (N - 1))
            dw = T @ (T @ (Y0 @ d - (N - 1) * w)) / (N - 1)
            w = w + dw
            E = forecast(x0 + (w[None, :] + T) @ A0)
            return k + 1, w, T, Tinv, E, jnp.vdot(dw, dw)

        def going(carry):
            k, *_, dw2 = carry
            return (k < self.max_iterations) & (dw2 >= self.tolerance * N)

        eye = jnp.eye(N, dtype=background.dtype)
        start = (0, jnp.zeros(N, background.dtype), eye, eye, background, jnp.inf)
        k, w, T, _, analysis, dw2 = jax.lax.while_loop(going, step, start)
        # the last iteration's members are the analysis ensemble; inflation (and a
        # rotation) act at the window start, the control's time, and are forecast again
        T = rotated(T, key, self.rotate)
        if self.rotate or self.inflation != Inflation():
            analysis = forecast(self.inflation(background[:, 0], x0 + (w[None, :] + T) @ A0))
        result = AnalysisResult.where(
            dw2 < self.tolerance * N, AnalysisResult.successful, AnalysisResult.max_steps_reached
        )
        return self._finish(background, analysis, obs, k, result, inflate=False)


class HybridEnVar(AbstractEnsembleMethod):
    """Hybrid 3D/4D-EnVar (Lorenc 2003; Buehner 2005): a variational analysis whose
    background error covariance blends the static `B` with the localised ensemble
    covariance,

    $$B_h = β B + (1 − β)\\, L ∘ P_e, \\qquad β = \\texttt{static\\_weight},$$

    through the control `v = (v_s, α_1…α_N)`: the increment at window time `t` is
    `δx_t = √β B^{1/2} v_s + √(1−β) Σ_k a_k(t) ∘ (L^{1/2} α_k) / √(N−1)`, the ensemble
    anomalies `a_k(t)` carrying it through the window — no tangent-linear or adjoint model
    (4D-EnVar; a window of one time is 3D-EnVar). The static part is the same at every
    window time. `L^{1/2}` is applied by FFT on a periodic grid (`LocalisationSqrt`: no
    `n × n` matrix, so a QG field of any size), else as a dense matrix. The cost `½|v|² + ½ Σ_t ‖y_t − H_t(x̄_b(t) + δx_t)‖²_R` is minimised by
    `n_outer` Gauss–Newton loops of conjugate gradients (`n_inner`, `tolerance`).

    The members are updated by the `LETKF` transform with the same localisation and
    recentred on the variational analysis (as operational hybrids recentre their EnKF).
    `new_rows` as for `IEnKS` (windows that slide by fewer steps than their length).
    """

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    members: int = eqx.field(static=True)
    localisation: Localisation
    static_weight: float = eqx.field(static=True, default=0.1)
    inflation: Inflation = Inflation()
    n_outer: int = eqx.field(static=True, default=1)
    n_inner: int = eqx.field(static=True, default=100)
    tolerance: float = eqx.field(static=True, default=1e-8)
    new_rows: int | None = eqx.field(static=True, default=None)
    localisation_sqrt: LocalisationSqrt | None = None

    def __check_init__(self):
        if not 0.0 <= self.static_weight <= 1.0:
            raise ValueError(
                f"HybridEnVar: static_weight must be in [0, 1], got {self.static_weight}"
            )
        if self.localisation_sqrt is None:
            raise ValueError("HybridEnVar: build it with HybridEnVar.build(...)")

    @classmethod
    def build(cls, obs_operator, prior_cov, obs_cov, members, localisation, **kwargs):
        """The method, with `L^{1/2}` of `localisation` formed once
        (`Localisation.sqrt_operator`)."""
        sqrt = localisation.sqrt_operator()
        return cls(
            obs_operator,
            prior_cov,
            obs_cov,
            members,
            localisation,
            localisation_sqrt=sqrt,
            **kwargs,
        )

    def _increment(self, v, A):
        """`δx_t` `(T+1, n)` of the control `v = (v_s (n,), α (N, n))`."""
        v_s, alpha = v
        N = self.members
        beta = self.static_weight
        static = jnp.sqrt(beta) * self.prior_cov.sqrt_mv(v_s)
        local = self.localisation_sqrt(alpha)  # (N, n): L^{1/2} α_k
        ens = jnp.sqrt((1.0 - beta) / (N - 1.0)) * jnp.einsum("ktn,kn->tn", A, local)
        return static[None, :] + ens

    def _analyse(self, background, obs, key):
        mean, A = _split(background)
        R, H = self.obs_cov, self.obs_operator

        def residual(v):
            x = mean + self._increment(v, A)

            def at_time(H_t, R_t, x_t, y, mask):
                return R_t.masked_whiten(jnp.where(mask, y - H_t(x_t), 0.0), mask)

            return map_times(at_time, obs, H, R, x, obs.values, obs.mask)

        def cost(v):
            r = residual(v)
            return 0.5 * (
                sum(jnp.vdot(c, c) for c in jax.tree_util.tree_leaves(v)) + jnp.vdot(r, r)
            )

        def outer(v, _):
            r, jvp = jax.linearize(residual, v)
            vjp = jax.linear_transpose(jvp, v)

            def normal(dv):  # (I + Jᵀ J) δv
                return jax.tree_util.tree_map(jnp.add, dv, vjp(jvp(dv))[0])

            rhs = jax.tree_util.tree_map(lambda a, b: -a - b, v, vjp(r)[0])
            operator = lx.FunctionLinearOperator(
                normal,
                jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), v),
                (lx.symmetric_tag, lx.positive_semidefinite_tag),
            )
            solver = lx.CG(rtol=self.tolerance, atol=self.tolerance, max_steps=self.n_inner)
            inner = lx.linear_solve(operator, rhs, solver, throw=False)
            v = jax.tree_util.tree_map(jnp.add, v, inner.value)
            return v, inner.result

        N, n = self.members, self.state_size
        v0 = (jnp.zeros(n, background.dtype), jnp.zeros((N, n), background.dtype))
        v, results = jax.lax.scan(outer, v0, None, length=self.n_outer)
        x_a = mean + self._increment(v, A)
        letkf = LETKF(H, self.prior_cov, R, N, self.localisation)
        members = letkf._analyse(background, obs, key).ensemble
        members = members - jnp.mean(members, axis=0) + x_a
        broke = jnp.any(
            (results != lx.RESULTS.successful) & (results != lx.RESULTS.max_steps_reached)
        )
        out = self._finish(background, members, obs, iterations=self.n_outer)
        result = AnalysisResult.where(
            broke, AnalysisResult.minimiser_failed, AnalysisResult.successful
        )
        return eqx.tree_at(
            lambda a: (a.cost_before, a.cost_after, a.result), out, (cost(v0), cost(v), result)
        )
