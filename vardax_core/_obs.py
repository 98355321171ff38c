"""Observation operators `H: state ↦ observation space`.

Missing observations are not an operator concern: they are a mask carried with the
observations (`ObsWindow.mask`) and applied to observations and predictions alike.
"""

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ._types import check_returns


class AbstractObsOperator(eqx.Module):
    """`y = H(x)` for one observation time."""

    is_linear: ClassVar[bool]

    @property
    @abc.abstractmethod
    def state_size(self) -> int:
        """Length of the states it takes."""

    @property
    @abc.abstractmethod
    def obs_size(self) -> int:
        """Length of the observation vectors it returns."""

    @abc.abstractmethod
    def __call__(self, x: jax.Array) -> jax.Array:
        """`H(x)`."""

    def linearise(self, x: jax.Array) -> lx.AbstractLinearOperator:
        """The Jacobian `H'(x)` as a (matrix-free) lineax operator."""
        return lx.JacobianLinearOperator(lambda z, _: self(z), x)

    def positions(self, shape: tuple[int, ...]) -> jax.Array | None:
        """Where each observation is on the state's grid of `shape`: `(m, d)` in grid units
        (what localisation measures distances from); `None` (default) when the operator
        does not say. An operator of one's own defines it to be localised."""
        return None


class LinearObs(AbstractObsOperator):
    """`H(x) = A x` for a matrix or any lineax operator `A`."""

    is_linear: ClassVar[bool] = True
    operator: lx.AbstractLinearOperator

    def __init__(self, operator):
        if not isinstance(operator, lx.AbstractLinearOperator):
            matrix = jnp.asarray(operator)
            if matrix.ndim != 2:
                raise ValueError(f"LinearObs: matrix must be 2-D, got shape {matrix.shape}")
            operator = lx.MatrixLinearOperator(matrix)
        self.operator = operator

    @property
    def state_size(self):
        return self.operator.in_size()

    @property
    def obs_size(self):
        return self.operator.out_size()

    def __call__(self, x):
        return self.operator.mv(x)

    def linearise(self, x):
        return self.operator


class FunctionObs(AbstractObsOperator):
    """`H(x) = h(x)` for a plain JAX-traceable function `h` of a state of size `n` returning
    `m` observations: how an operator of one's own joins without subclassing (`linear`:
    declare `h` linear, for OI; its Jacobian comes from JAX either way)."""

    h: Callable[[jax.Array], jax.Array]
    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    linear: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        check_returns(self.h, self.n, (self.m,), "the observation function")

    @property
    def is_linear(self) -> bool:  # type: ignore[override]
        return self.linear

    @property
    def state_size(self):
        return self.n

    @property
    def obs_size(self):
        return self.m

    def __call__(self, x):
        return self.h(x)


def _indices(i) -> tuple[int, ...]:
    return tuple(int(k) for k in i)


class _AbstractIndexedObs(AbstractObsOperator):
    """Observes (a function of) the components `indices` of a state of size `n`."""

    indices: eqx.AbstractVar[tuple[int, ...]]
    n: eqx.AbstractVar[int]

    def __check_init__(self):
        bad = [i for i in self.indices if not 0 <= i < self.n]
        if bad:
            raise ValueError(
                f"{type(self).__name__}: indices {bad} are outside a state of size {self.n}"
            )
        if not self.indices:
            raise ValueError(f"{type(self).__name__}: indices is empty")

    @property
    def state_size(self):
        return self.n

    @property
    def obs_size(self):
        return len(self.indices)

    def _select(self, x):
        return x[np.asarray(self.indices)]

    def positions(self, shape):
        index = np.unravel_index(np.asarray(self.indices), tuple(shape))
        return jnp.asarray(np.stack(index, axis=-1), float)


class SubsetObs(_AbstractIndexedObs):
    """Observes the components `indices` of the state: `H(x) = x[indices]`."""

    is_linear: ClassVar[bool] = True
    indices: tuple[int, ...] = eqx.field(static=True, converter=_indices)
    n: int = eqx.field(static=True)

    def __call__(self, x):
        return self._select(x)

    def linearise(self, x):
        return lx.FunctionLinearOperator(self, jax.ShapeDtypeStruct(x.shape, x.dtype))


class NonlinearObs(_AbstractIndexedObs):
    """Observes `transform(x[indices])` element-wise (default `arctan`, a saturating sensor)."""

    is_linear: ClassVar[bool] = False
    indices: tuple[int, ...] = eqx.field(static=True, converter=_indices)
    n: int = eqx.field(static=True)
    transform: Callable[[jax.Array], jax.Array] = eqx.field(static=True, default=jnp.arctan)

    def __call__(self, x):
        return self.transform(self._select(x))


def interpolation_weights(positions, shape, periodic: bool = True):
    """Linear (1-D) or bilinear (2-D) interpolation on a regular grid of `shape` at
    `positions` `(…, m, d)` in grid units (`d = len(shape)`): **returns** `(corners,
    weights)`, each `(…, m, 2^d)`, the flat indices of the surrounding grid points and their
    weights. On a periodic grid positions wrap around; otherwise they must lie inside it
    (`ValueError`)."""
    shape = tuple(int(s) for s in shape)
    pts = np.asarray(positions, dtype=np.float64)
    d = len(shape)
    if d not in (1, 2) or pts.ndim < 2 or pts.shape[-1] != d:
        raise ValueError(
            f"interpolation: positions must be (…, m, {d}) for a grid of shape {shape}, "
            f"got {pts.shape}"
        )
    if not np.all(np.isfinite(pts)):
        raise ValueError("interpolation: positions has non-finite coordinates")
    size = np.asarray(shape, dtype=np.float64)
    if periodic:
        pts = np.mod(pts, size)
    elif np.any(pts < 0) or np.any(pts > size - 1):
        raise ValueError(
            f"interpolation: positions outside the grid [0, n − 1] per axis of {shape}"
        )
    lo = np.floor(pts).astype(np.int64)
    frac = pts - lo
    hi = (lo + 1) % size.astype(np.int64) if periodic else np.minimum(lo + 1, size.astype(int) - 1)
    corners, weights = [], []
    for corner in np.ndindex(*(2,) * d):  # (0,), (1,) or (0,0), (0,1), (1,0), (1,1)
        index = np.zeros(pts.shape[:-1], np.int64)
        weight = np.ones(pts.shape[:-1])
        for axis, upper in enumerate(corner):
            i = hi[..., axis] if upper else lo[..., axis]
            index = index * shape[axis] + i
            weight = weight * (frac[..., axis] if upper else 1.0 - frac[..., axis])
        corners.append(index)
        weights.append(weight)
    return np.stack(corners, axis=-1), np.stack(weights, axis=-1)


class RegularGrid(eqx.Module):
    """A model's evenly spaced grid in its own coordinates: `origin` and `spacing` per axis,
    `shape`, and whether it is `periodic`. Where observations at positions are:
    `index(positions)` in grid units, `inside(positions)`, and `operator(positions)`, the
    interpolation that observes them (`InterpolationObs`)."""

    origin: tuple[float, ...] = eqx.field(static=True, converter=tuple)
    spacing: tuple[float, ...] = eqx.field(static=True, converter=tuple)
    shape: tuple[int, ...] = eqx.field(static=True, converter=tuple)
    periodic: bool = eqx.field(static=True, default=True)

    @classmethod
    def of(cls, model) -> "RegularGrid":
        """The grid of a model's `state_coords` (`ValueError` if they are not evenly
        spaced, or the state is not a line or a plane)."""
        shape, dims = model.state_shape, model.state_dims
        if len(shape) not in (1, 2):
            raise ValueError(f"positions need a 1-D or 2-D grid; the state's shape is {shape}")
        origin, spacing = [], []
        for d, size in zip(dims, shape, strict=True):
            c = np.asarray(model.state_coords.get(d, ()), float)
            step = (c[-1] - c[0]) / (size - 1) if size > 1 and len(c) == size else 1.0
            if len(c) != size or not step > 0 or not np.allclose(np.diff(c), step):
                raise ValueError(f"positions need evenly spaced, increasing coordinates of {d}")
            origin.append(float(c[0]))
            spacing.append(float(step))
        return cls(origin, spacing, shape, bool(model.periodic))

    def index(self, positions) -> np.ndarray:
        """Positions `(…, d)` in the model's coordinates as fractional grid indices."""
        return (np.asarray(positions, float) - np.asarray(self.origin)) / np.asarray(self.spacing)

    def inside(self, positions) -> np.ndarray:
        """Which finite positions `(…, d)` lie on the grid (all finite ones if periodic)."""
        index = self.index(positions)
        finite = np.all(np.isfinite(index), axis=-1)
        if self.periodic:
            return finite
        with np.errstate(invalid="ignore"):
            within = (index >= 0) & (index <= np.asarray(self.shape) - 1)
        return finite & np.all(within, axis=-1)

    def operator(self, positions) -> "InterpolationObs":
        """The interpolation `H` of observations at `positions` `(…, m, d)` (batched over
        leading axes: `(T, m, d)` gives a window's operators); a position not `inside`
        (an empty slot, NaN) is put at the origin — its observation must be masked."""
        index = np.where(self.inside(positions)[..., None], self.index(positions), 0.0)
        return InterpolationObs.at(index, self.shape, self.periodic)


class InterpolationObs(AbstractObsOperator):
    """Observes a field on a regular grid of `shape` (a ring or line `(n,)`, a plane
    `(ny, nx)`; the state flattened row-major) at positions in grid units, by linear or
    bilinear interpolation: `H x = Σ_k w_k x[i_k]`. Linear; at whole-number positions it
    picks grid values.

    `InterpolationObs.at(positions, shape)` builds it; with positions `(T, m, d)` it is
    the window's operators, one per time (`ObsWindow(operator=…)`).
    """

    is_linear: ClassVar[bool] = True
    shape: tuple[int, ...] = eqx.field(static=True)
    corners: jax.Array  # (…, m, 2^d) flat indices
    weights: jax.Array  # (…, m, 2^d)

    @classmethod
    def at(cls, positions, shape, periodic: bool = True) -> "InterpolationObs":
        corners, weights = interpolation_weights(positions, shape, periodic)
        return cls(tuple(int(s) for s in shape), jnp.asarray(corners), jnp.asarray(weights))

    @property
    def state_size(self):
        return int(np.prod(self.shape))

    @property
    def obs_size(self):
        return self.corners.shape[-2]

    def __call__(self, x):
        return jnp.sum(x[self.corners] * self.weights.astype(x.dtype), axis=-1)

    def linearise(self, x):
        return lx.FunctionLinearOperator(self, jax.ShapeDtypeStruct(x.shape, x.dtype))

    def positions(self, shape):
        # the lower corner (corner 0) plus, per axis, the weight of the corners above it
        lower = jnp.stack(jnp.unravel_index(self.corners[..., 0], self.shape), axis=-1)
        d = len(self.shape)
        upper = [
            sum(self.weights[..., k] for k, c in enumerate(np.ndindex(*(2,) * d)) if c[axis])
            for axis in range(d)
        ]
        return lower + jnp.stack(upper, axis=-1)


class BilinearObs(AbstractObsOperator):
    """Observes a 2-D periodic field (flattened row-major, `shape = (ny, nx)`) at points
    `(y, x)` in grid units, by bilinear interpolation between the four surrounding grid
    points (`InterpolationObs` at fixed points, which it keeps as `points`). Linear; at
    whole-number points it picks grid values.
    """

    is_linear: ClassVar[bool] = True
    shape: tuple[int, int] = eqx.field(static=True)
    points: jax.Array
    _corners: jax.Array  # (m, 4) flat indices
    _weights: jax.Array  # (m, 4)

    def __init__(self, points, shape):
        ny, nx = (int(s) for s in shape)
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or not len(pts):
            raise ValueError(f"BilinearObs: points must be (m, 2) (y, x) pairs, got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("BilinearObs: points has non-finite coordinates")
        corners, weights = interpolation_weights(pts, (ny, nx))
        self.shape = (ny, nx)
        self.points = jnp.asarray(np.mod(pts, [ny, nx]))
        self._corners = jnp.asarray(corners)
        self._weights = jnp.asarray(weights)

    @property
    def state_size(self):
        return self.shape[0] * self.shape[1]

    @property
    def obs_size(self):
        return len(self.points)

    def __call__(self, x):
        return jnp.sum(x[self._corners] * self._weights.astype(x.dtype), axis=1)

    def positions(self, shape):
        return self.points

    def linearise(self, x):
        return lx.FunctionLinearOperator(self, jax.ShapeDtypeStruct(x.shape, x.dtype))


def gridded_points(shape, every: int, offset: int = 0) -> np.ndarray:
    """Grid points `(y, x)` every `every` cells from `offset` in both directions, `(m, 2)`."""
    ny, nx = shape
    ys, xs = np.arange(offset, ny, every), np.arange(offset, nx, every)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([Y.ravel(), X.ravel()], axis=1).astype(np.float64)


def station_points(shape, count: int, seed: int = 0) -> np.ndarray:
    """`count` irregular "stations" uniformly over the domain (off the grid), `(m, 2)`."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (count, 2)) * np.asarray(shape, dtype=np.float64)


def swath_points(
    shape, tracks: int, width: int = 3, spacing: float = 1.0, angle: float = 60.0
) -> tuple[np.ndarray, np.ndarray]:
    """Along-track swaths like an altimeter's: `tracks` ground tracks evenly spaced in `x`,
    each crossing the domain at `angle` degrees from the `x` axis, sampled every `spacing`
    cells along the track and at `width` points across it (one cell apart).

    **Returns** `(points (m, 2), track (m,))`: every track's points, and which track each
    point belongs to (an instrument sees one track per observation time, see
    `swath_schedule`).
    """
    ny, nx = shape
    slope = 1.0 / np.tan(np.deg2rad(angle))  # x advance per unit y
    along = np.arange(0.0, ny, spacing)
    across = np.arange(width) - (width - 1) / 2.0
    points, track = [], []
    for j in range(tracks):
        x0 = j * nx / tracks
        for a in across:
            points.append(np.stack([along, x0 + a + slope * along], axis=1))
            track.append(np.full(len(along), j))
    return np.mod(np.concatenate(points), [ny, nx]), np.concatenate(track)


def swath_schedule(track: np.ndarray, n_times: int, every: int = 1) -> np.ndarray:
    """Which swath points are seen at each of `n_times` model times: at the `k`-th
    observation time (every `every` steps) the instrument passes over track `k mod tracks`.
    **Returns** a boolean `(n_times, m)`."""
    tracks = int(track.max()) + 1
    t = np.arange(n_times)
    seen = (t % every == 0)[:, None] & (((t // every) % tracks)[:, None] == track[None, :])
    return seen
