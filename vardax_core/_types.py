"""Array types used across the core: one place, so signatures read in DA terms."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

State = Float[Array, "n"]
Trajectory = Float[Array, "time n"]
ObsVector = Float[Array, "m"]
ObsSeries = Float[Array, "time m"]
ObsMask = Bool[Array, "time m"]
Scalar = Float[Array, ""]
IntScalar = Int[Array, ""]


def check_returns(fn, n: int, shape: tuple[int, ...], what: str) -> None:
    """Raises `ValueError` unless `fn` (traced, nothing computed) maps a state of `n`
    components to an array of `shape`: a user's function checked before it is used."""
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct((n,), jnp.result_type(float)))
    if getattr(out, "shape", None) != shape:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"{what} returns {got} for a state of shape ({n},), expected {shape}")


__all__ = ["State", "Trajectory", "ObsVector", "ObsSeries", "ObsMask", "Scalar", "IntScalar"]
