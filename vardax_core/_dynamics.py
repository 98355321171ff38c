"""Forward models (Lorenz-63, Lorenz-96, two-level Lorenz-96) and their integrators.

A forward model owns its physics (the vector field); how it is integrated is a slot:
`RK4` is the fixed-step fast path, `Diffrax` integrates with `diffrax.diffeqsolve` and
carries the differentiation strategy (`RecursiveCheckpointAdjoint`, `BacksolveAdjoint`, …).
"""

import abc
from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._types import State, Trajectory, check_returns

VectorField = Callable[[State], State]


class AbstractIntegrator(eqx.Module):
    """How a vector field is integrated over `n_steps` steps of length `dt`."""

    @abc.abstractmethod
    def rollout(self, vector_field: VectorField, x0: State, dt: float, n_steps: int) -> Trajectory:
        """**Returns** the states at times `0, dt, …, n_steps·dt`, shape `(n_steps + 1, n)`."""


class RK4(AbstractIntegrator):
    """Classical fourth-order Runge–Kutta with `substeps` equal substeps per model step."""

    substeps: int = eqx.field(static=True, default=1)

    def _step(self, vector_field: VectorField, x: State, dt: float) -> State:
        h = dt / self.substeps

        def substep(_, y):
            k1 = vector_field(y)
            k2 = vector_field(y + 0.5 * h * k1)
            k3 = vector_field(y + 0.5 * h * k2)
            k4 = vector_field(y + h * k3)
            return y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

        if self.substeps == 1:
            return substep(0, x)
        return jax.lax.fori_loop(0, self.substeps, substep, x)

    def rollout(self, vector_field, x0, dt, n_steps):
        def body(x, _):
            x_next = self._step(vector_field, x, dt)
            return x_next, x_next

        _, xs = jax.lax.scan(body, x0, length=n_steps)
        return jnp.concatenate([x0[None], xs], axis=0)


class Diffrax(AbstractIntegrator):
    """Integration by `diffrax.diffeqsolve` over the whole window, saving every model step.

    **Arguments:**
    - `solver`: any diffrax solver (default `Tsit5`).
    - `adjoint`: the differentiation strategy through the solve (default
      `RecursiveCheckpointAdjoint`; `BacksolveAdjoint` gives constant memory).
    - `stepsize_controller`: default adaptive `PIDController(rtol=1e-8, atol=1e-8)`.
    - `max_steps`: the solver's step budget for one rollout.
    """

    solver: dfx.AbstractSolver = dfx.Tsit5()
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint()
    stepsize_controller: dfx.AbstractStepSizeController = dfx.PIDController(rtol=1e-8, atol=1e-8)
    max_steps: int = eqx.field(static=True, default=100_000)

    def rollout(self, vector_field, x0, dt, n_steps):
        ts = dt * jnp.arange(n_steps + 1, dtype=x0.dtype)
        sol = dfx.diffeqsolve(
            dfx.ODETerm(lambda t, y, args: vector_field(y)),
            self.solver,
            t0=ts[0],
            t1=ts[-1],
            dt0=jnp.asarray(dt, dtype=x0.dtype),
            y0=x0,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=self.stepsize_controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
        )
        return sol.ys


class AbstractForwardModel(eqx.Module):
    """A deterministic model `dx/dt = f(x)` stepped with a fixed model time step `dt`.

    Its state is a flat vector of `state_size`; what it is laid out as is declared here
    and asked by the cycle, the covariances and the store (never the model's name):
    - `state_shape`: the field the vector flattens (row-major), e.g. `(ny, nx)`;
    - `state_dims`: the names of its dimensions (the store's coordinates);
    - `periodic`: the field is a homogeneous, periodic grid (a ring, a doubly periodic
      plane), on which stationary covariances are circulant (`SpectralCovariance`).
    """

    dt: eqx.AbstractVar[float]
    integrator: eqx.AbstractVar[AbstractIntegrator]
    periodic: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def state_size(self) -> int:
        """Length of the state vector."""

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of the field the state vector flattens (default: the vector)."""
        return (self.state_size,)

    @property
    def state_dims(self) -> tuple[str, ...]:
        """Names of the state's dimensions, one per axis of `state_shape`."""
        return ("state",)

    @property
    def state_coords(self) -> dict[str, np.ndarray]:
        """The coordinate of each state dimension (default: grid indices `0…size−1`): the
        store's coordinates, and the units in which observations give their positions.
        Positions are interpolated on this grid, which must be evenly spaced."""
        dims = zip(self.state_dims, self.state_shape, strict=True)
        return {d: np.arange(s, dtype=float) for d, s in dims}

    @abc.abstractmethod
    def vector_field(self, x: State) -> State:
        """The tendency `f(x)`."""

    def check_state(self, x: jax.Array, name: str = "state") -> None:
        """Raises `ValueError` (at trace time) if `x` is not a state of this model."""
        if x.ndim != 1 or x.shape[0] != self.state_size:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but {type(self).__name__} has state size "
                f"{self.state_size}: expected shape ({self.state_size},)"
            )

    def random_state(self, key, scale=1.0) -> State:
        """A random state to spin a nature run up from: `N(0, scale²)` per component
        (a field model overrides it with a smooth field)."""
        return scale * jax.random.normal(key, (self.state_size,))

    def perturbation(self, key, std) -> State:
        """Random noise of standard deviation `std` to add to a state (a first guess, an
        ensemble member): white by default; a field model's is smooth, since white noise
        at the grid scale is not a state its dynamics can take."""
        return std * jax.random.normal(key, (self.state_size,))

    def step(self, x: State) -> State:
        """The one-step map `x(t) ↦ x(t + dt)`."""
        return self.rollout(x, 1)[1]

    def rollout(self, x0: State, n_steps: int) -> Trajectory:
        """Integrates `n_steps` model steps from `x0`.

        **Returns** the trajectory including `x0`, shape `(n_steps + 1, n)`.
        """
        self.check_state(x0, "x0")
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
        if n_steps == 0:
            return x0[None]
        return self.integrator.rollout(self.vector_field, x0, self.dt, n_steps)


class Lorenz63(AbstractForwardModel):
    """Lorenz (1963): `ẋ = σ(y − x)`, `ẏ = x(ρ − z) − y`, `ż = xy − βz`."""

    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0
    dt: float = 0.01
    integrator: AbstractIntegrator = RK4()

    @property
    def state_size(self) -> int:
        return 3

    @property
    def state_dims(self) -> tuple[str, ...]:
        return ("component",)

    def random_state(self, key, scale=1.0) -> State:
        """`N(0, scale²)` about `(0, 0, 25)`, near the attractor's two lobes."""
        return super().random_state(key, scale) + jnp.array([0.0, 0.0, 25.0])

    def vector_field(self, x):
        return jnp.stack(
            [
                self.sigma * (x[1] - x[0]),
                x[0] * (self.rho - x[2]) - x[1],
                x[0] * x[1] - self.beta * x[2],
            ]
        )


def _l96_advection(x: jax.Array) -> jax.Array:
    """`(x_{k+1} − x_{k−2}) x_{k−1}` on a periodic ring."""
    return (jnp.roll(x, -1) - jnp.roll(x, 2)) * jnp.roll(x, 1)


class Lorenz96(AbstractForwardModel):
    """Lorenz (1996): `ẋ_k = (x_{k+1} − x_{k−2}) x_{k−1} − x_k + F` on a ring of `K` sites."""

    K: int = eqx.field(static=True, default=40)
    F: float = 8.0
    dt: float = 0.05
    integrator: AbstractIntegrator = RK4()
    periodic: ClassVar[bool] = True

    def __check_init__(self):
        if self.K < 4:
            raise ValueError(f"Lorenz96 needs K >= 4 sites, got K={self.K}")

    @property
    def state_size(self) -> int:
        return self.K

    @property
    def state_dims(self) -> tuple[str, ...]:
        return ("site",)

    def vector_field(self, x):
        return _l96_advection(x) - x + self.F


class Lorenz96TwoLevel(AbstractForwardModel):
    """Two-level Lorenz-96: `K` slow variables `X`, each coupled to `J` fast variables `Y`.

    $$\\dot X_k = (X_{k+1} − X_{k−2}) X_{k−1} − X_k + F − \\tfrac{hc}{b} \\sum_j Y_{j,k}$$
    $$\\dot Y_{j,k} = −cb\\,Y_{j+1,k}(Y_{j+2,k} − Y_{j−1,k}) − c\\,Y_{j,k} + \\tfrac{hc}{b} X_k$$

    The state is `[X (K), Y (K·J)]` with `Y` one ring of `K·J` sites, block `k` first.
    """

    K: int = eqx.field(static=True, default=8)
    J: int = eqx.field(static=True, default=8)
    F: float = 20.0
    h: float = 1.0
    c: float = 10.0
    b: float = 10.0
    dt: float = 0.005
    integrator: AbstractIntegrator = RK4()

    def __check_init__(self):
        if self.K < 4 or self.J < 1:
            raise ValueError(
                f"Lorenz96TwoLevel needs K >= 4 and J >= 1, got K={self.K}, J={self.J}"
            )

    @property
    def state_size(self) -> int:
        return self.K * (1 + self.J)

    @property
    def state_dims(self) -> tuple[str, ...]:
        return ("site",)

    @property
    def slow(self) -> slice:
        """Index of the slow block `X` in the state."""
        return slice(0, self.K)

    @property
    def fast(self) -> slice:
        """Index of the fast block `Y` in the state."""
        return slice(self.K, self.state_size)

    def vector_field(self, state):
        x, y = state[: self.K], state[self.K :]
        coupling = self.h * self.c / self.b
        dx = _l96_advection(x) - x + self.F - coupling * y.reshape(self.K, self.J).sum(axis=1)
        y_adv = -self.c * self.b * jnp.roll(y, -1) * (jnp.roll(y, -2) - jnp.roll(y, 1))
        dy = y_adv - self.c * y + coupling * jnp.repeat(x, self.J)
        return jnp.concatenate([dx, dy])


class VectorFieldModel(AbstractForwardModel):
    """A model from a plain vector field `f(x) -> dx/dt` (any JAX-traceable function of a
    state of `n` components), stepped every `dt` by `integrator`: how a model of one's own
    joins the pipeline without subclassing. `dims` names its one dimension; `ring` says it
    is a homogeneous periodic ring (stationary covariances are circulant on it, positions
    wrap around)."""

    f: VectorField
    n: int = eqx.field(static=True)
    dt: float
    integrator: AbstractIntegrator = RK4()
    dims: tuple[str, ...] = eqx.field(static=True, default=("state",), converter=tuple)
    ring: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.n < 1:
            raise ValueError(f"VectorFieldModel: n must be >= 1, got {self.n}")
        if len(self.dims) != 1:
            raise ValueError(f"VectorFieldModel: dims names the one dimension, got {self.dims}")
        check_returns(self.f, self.n, (self.n,), "the vector field (dx/dt, the same shape)")

    @property
    def periodic(self) -> bool:  # type: ignore[override]
        return self.ring

    @property
    def state_size(self) -> int:
        return self.n

    @property
    def state_dims(self) -> tuple[str, ...]:
        return self.dims

    def vector_field(self, x):
        return self.f(x)
