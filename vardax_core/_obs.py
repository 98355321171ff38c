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


class BilinearObs(AbstractObsOperator):
    """Observes a 2-D periodic field (flattened row-major, `shape = (ny, nx)`) at points
    `(y, x)` in grid units, by bilinear interpolation between the four surrounding grid
    points: `H x = Σ w_k x[i_k]`. Linear; at whole-number points it picks grid values.
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
        pts = np.mod(pts, [ny, nx])
        i0, j0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
        wy, wx = pts[:, 0] - i0, pts[:, 1] - j0
        i1, j1 = (i0 + 1) % ny, (j0 + 1) % nx
        self.shape = (ny, nx)
        self.points = jnp.asarray(pts)
        self._corners = jnp.asarray(
            np.stack([i0 * nx + j0, i0 * nx + j1, i1 * nx + j0, i1 * nx + j1], axis=1)
        )
        self._weights = jnp.asarray(
            np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], axis=1)
        )

    @property
    def state_size(self):
        return self.shape[0] * self.shape[1]

    @property
    def obs_size(self):
        return len(self.points)

    def __call__(self, x):
        return jnp.sum(x[self._corners] * self._weights.astype(x.dtype), axis=1)

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
