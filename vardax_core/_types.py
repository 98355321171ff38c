"""Array types used across the core: one place, so signatures read in DA terms."""

from jaxtyping import Array, Bool, Float, Int

State = Float[Array, "n"]
Trajectory = Float[Array, "time n"]
ObsVector = Float[Array, "m"]
ObsSeries = Float[Array, "time m"]
ObsMask = Bool[Array, "time m"]
Scalar = Float[Array, ""]
IntScalar = Int[Array, ""]

__all__ = ["State", "Trajectory", "ObsVector", "ObsSeries", "ObsMask", "Scalar", "IntScalar"]
