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
