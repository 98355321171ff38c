"""A smooth, monotonic nonlinear observation operator: `y = u + κ u³` at grid points."""

import math
from collections.abc import Iterable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

import vardax_core as vc


def _locations(values) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"CubicObs: locations must be a list of ints, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"CubicObs: locations must be ints, got {v!r}")
        out.append(int(v))
    return tuple(out)


class CubicObs(vc.AbstractObsOperator):
    """Observes `u + κ u³` at the state components `locations` of a state of `state_size`.

    Strictly increasing for `κ ≥ 0` (slope `1 + 3κu² ≥ 1`), so every observation is
    informative and the 3DVar / 4DVar costs stay well posed; `κ = 0` is the identity.
    Nonlinear (`is_linear = False`): OI, which needs a linear `H`, refuses it.

    **Arguments:** `locations` (distinct ints in `0 … state_size − 1`), `state_size`,
    `kappa` (default 0.1).
    """

    is_linear: ClassVar[bool] = False
    locations: tuple[int, ...] = eqx.field(static=True)
    n: int = eqx.field(static=True)
    kappa: float

    def __init__(self, locations, state_size, kappa: float = 0.1):
        self.locations = _locations(locations)
        if isinstance(state_size, bool) or not isinstance(state_size, int | np.integer):
            raise ValueError(f"CubicObs: state_size must be an int, got {state_size!r}")
        self.n = int(state_size)
        if isinstance(kappa, bool) or not isinstance(kappa, int | float | np.floating):
            raise ValueError(f"CubicObs: kappa must be a number, got {kappa!r}")
        self.kappa = float(kappa)

    def __check_init__(self):
        if self.n < 1:
            raise ValueError(f"CubicObs: state_size must be >= 1, got {self.n}")
        if not self.locations:
            raise ValueError("CubicObs: locations is empty")
        bad = [i for i in self.locations if not 0 <= i < self.n]
        if bad:
            raise ValueError(f"CubicObs: locations {bad} are outside a state of size {self.n}")
        if len(set(self.locations)) != len(self.locations):
            raise ValueError("CubicObs: locations has duplicates")
        if not (math.isfinite(self.kappa) and self.kappa >= 0):
            raise ValueError(
                f"CubicObs: kappa must be finite and >= 0 (u + κu³ is monotonic only then), "
                f"got {self.kappa}"
            )

    @property
    def state_size(self) -> int:
        return self.n

    @property
    def obs_size(self) -> int:
        return len(self.locations)

    def _select(self, x):
        return x[np.asarray(self.locations)]

    def positions(self, shape):
        """Each observation's grid index, `(m, 1)`: what `letkf` and `hybrid_envar` localise
        by (their ring distance on the periodic KS grid)."""
        return jnp.asarray(np.asarray(self.locations, float)[:, None])

    def __call__(self, x):
        u = self._select(x)
        return u + self.kappa * u**3

    def linearise(self, x):
        """`H'(x) δx = (1 + 3κ u²) δu` at the locations, matrix-free."""
        slope = 1.0 + 3.0 * self.kappa * self._select(x) ** 2
        return lx.FunctionLinearOperator(
            lambda dx: slope * self._select(dx), jax.ShapeDtypeStruct(x.shape, x.dtype)
        )
