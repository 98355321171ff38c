"""The Kuramoto–Sivashinsky equation on a periodic domain, stepped pseudo-spectrally.

$$u_t = −u u_x − u_{xx} − u_{xxxx}, \\qquad x ∈ [0, L)$$

on `n` equally spaced grid points. Derivatives are taken with `jnp.fft` (so the model is
differentiable in forward and reverse mode: 4DVar's tangent linear and adjoint come from
JAX). The nonlinear term `−½ (u²)_x` is de-aliased by the 2/3 rule (its modes beyond the
cut-off are dropped, as in `vardax_core.QuasiGeostrophic`); the Fourier modes beyond the
cut-off are not forced and decay at the rate of the last resolved mode, which also bounds
the stiffness an explicit integrator has to resolve (three FFTs per tendency).
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import vardax_core as vc

RK4_STABLE = 2.5
"""`h·|λ|` kept below this for the stiffest mode (RK4's real-axis limit is about 2.79)."""


def _indices(n: int) -> np.ndarray:
    """Integer wavenumbers `0 … n/2` of `rfft` on `n` points."""
    return np.fft.rfftfreq(n, 1.0 / n)


def _resolved(n: int) -> np.ndarray:
    """The modes kept by the 2/3 rule (`|m| < n/3`)."""
    return _indices(n) < n / 3.0


def _stiffest_rate(n: int, L: float) -> float:
    """`|λ|` of the fastest-decaying mode: the last resolved one, `k⁴ − k²`."""
    k = 2.0 * math.pi / L * _indices(n)[_resolved(n)].max()
    return abs(k**4 - k**2)


def stable_substeps(n: int, L: float, dt: float) -> int:
    """The RK4 substeps per model step that keep `h·|λ_max| ≤ 2.5` (`h = dt/substeps`)."""
    return max(1, math.ceil(dt * _stiffest_rate(n, L) / RK4_STABLE))


class KuramotoSivashinsky(vc.AbstractForwardModel):
    """`u_t = −u u_x − u_xx − u_xxxx` on a periodic domain of length `L`, `n` grid points.

    **Arguments** (keywords only):
    - `n`: grid points, even and at least 8 (default 64).
    - `L`: the domain's length (default 22, the well-studied chaotic case: a leading
      Lyapunov exponent of about 0.05 per time unit, `u` of standard deviation ≈ 1.2).
    - `dt`: the model time step (default 0.05).
    - `integrator`: default `vardax_core.RK4` with `stable_substeps(n, L, dt)` substeps
      (26 at the defaults, 2 at `n=32`: the stiffness grows as `n⁴`). A coarser `RK4` is
      refused: the fourth-derivative term makes the equation stiff, and an unstable step
      would blow up without an error. `substeps=k` is short for `integrator=RK4(substeps=k)`
      (what a YAML config can say: `params: {substeps: 40}`).

    `n=32` resolves `L=22` (the spectrum at its 2/3 cut-off, `k ≈ 2.9`, is 1e-5 of its
    peak) at a tenth of the cost of `n=64`, which the example configs use.

    The state is `u` on the grid `x_j = j·L/n` (`state_coords`), dimension `"x"`; the grid
    is periodic and homogeneous, so `SpectralCovariance` (`prior_cov: {kind: spectral}`)
    applies.
    """

    n: int = eqx.field(static=True)
    L: float
    dt: float
    integrator: vc.AbstractIntegrator
    periodic: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n: int = 64,
        L: float = 22.0,
        dt: float = 0.05,
        integrator: vc.AbstractIntegrator | None = None,
        substeps: int | None = None,
    ):
        self.n = n
        self.L = L
        self.dt = dt
        if substeps is not None:
            if integrator is not None:
                raise ValueError(f"{type(self).__name__}: give integrator or substeps, not both")
            if not _is_int(substeps) or substeps < 1:
                raise ValueError(
                    f"{type(self).__name__}: substeps must be an int >= 1, got {substeps!r}"
                )
            integrator = vc.RK4(substeps=int(substeps))
        if integrator is None:
            ok = _is_int(n) and n >= 8 and _is_positive(L) and _is_positive(dt)
            integrator = vc.RK4(substeps=stable_substeps(n, L, dt) if ok else 1)
        self.integrator = integrator

    def __check_init__(self):
        name = type(self).__name__
        if not _is_int(self.n) or self.n < 8 or self.n % 2:
            raise ValueError(f"{name}: n must be an even int >= 8 grid points, got n={self.n!r}")
        if not _is_positive(self.L):
            raise ValueError(f"{name}: L (the domain's length) must be > 0, got L={self.L!r}")
        if not _is_positive(self.dt):
            raise ValueError(f"{name}: dt must be > 0, got dt={self.dt!r}")
        if not isinstance(self.integrator, vc.AbstractIntegrator):
            raise ValueError(
                f"{name}: integrator must be a vardax_core.AbstractIntegrator, got "
                f"{type(self.integrator).__name__}"
            )
        if isinstance(self.integrator, vc.RK4):
            needed = stable_substeps(self.n, self.L, self.dt)
            if self.integrator.substeps < needed:
                raise ValueError(
                    f"{name}: RK4 with {self.integrator.substeps} substeps is unstable for "
                    f"n={self.n}, L={self.L}, dt={self.dt} (the stiffest mode decays at rate "
                    f"{_stiffest_rate(self.n, self.L):.4g}): use at least {needed} substeps, "
                    "a smaller dt, or leave integrator unset"
                )

    @property
    def state_size(self) -> int:
        return self.n

    @property
    def state_dims(self) -> tuple[str, ...]:
        return ("x",)

    @property
    def state_coords(self) -> dict[str, np.ndarray]:
        """The grid positions `x_j = j·L/n` in the domain's units."""
        return {"x": np.arange(self.n) * (float(self.L) / self.n)}

    def _operators(self, dtype):
        """`(i k, linear rate)` on the `rfft` half-spectrum: `i k` is 0 beyond the 2/3
        cut-off, the rate `k² − k⁴` is that of the last resolved mode there."""
        resolved = _resolved(self.n)
        k = (2.0 * jnp.pi / self.L) * jnp.asarray(_indices(self.n), dtype=dtype)
        rate = k**2 - k**4
        rate = jnp.where(resolved, rate, rate[int(np.flatnonzero(resolved)[-1])])
        return 1j * jnp.where(resolved, k, 0.0), rate

    def vector_field(self, u):
        ik, rate = self._operators(u.dtype)
        uh = jnp.fft.rfft(u)
        advection = -0.5 * ik * jnp.fft.rfft(u * u)
        return jnp.fft.irfft(rate * uh + advection, n=self.n)

    def _band_noise(self, key, std, k_max: float):
        """White noise kept at wavenumbers `0 < k ≤ k_max` (and resolved), of exactly
        standard deviation `std` and zero mean (the mean of `u` is conserved)."""
        m = _indices(self.n)
        k = 2.0 * np.pi / float(self.L) * m
        band = (m >= 1) & (k <= k_max) & _resolved(self.n)
        band[1] = True  # at least the longest wave
        noise = jax.random.normal(key, (self.n,))
        smooth = jnp.fft.irfft(jnp.where(jnp.asarray(band), jnp.fft.rfft(noise), 0.0), n=self.n)
        return std * smooth / jnp.std(smooth)

    def random_state(self, key, scale=1.0):
        """A smooth random `u` of standard deviation `scale` in the linearly unstable band
        (`0 < k < 1`), from which the model spins up onto its attractor (allow ~100 time
        units: `cycling.spinup_steps`)."""
        return self._band_noise(key, scale, 1.0)

    def perturbation(self, key, std):
        """Smooth zero-mean noise of standard deviation `std` at wavenumbers `k ≤ 2` (the
        attractor's energy lies below `k ≈ 1.5`; white noise at the grid scale would be
        damped at once and tell a method nothing)."""
        return self._band_noise(key, std, 2.0)


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_positive(value) -> bool:
    try:
        return bool(value > 0) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
