"""A doubly periodic quasi-geostrophic model on a 2-D grid, stepped pseudo-spectrally; its
state is the streamfunction `ψ` (as in DAPPER's QG and sea-surface-height altimetry).

$$q = ∇^2ψ − κ^2ψ,\\qquad
\\partial_t q = −J(ψ, q) − β\\,\\partial_xψ − μ∇^2ψ − ν∇^8 q + A\\cos(k_f y)$$

on `[0, 2π)²` with `ny × nx` grid points: one layer with deformation wavenumber `κ`
(`κ = 0` gives 2-D Navier–Stokes), the β-effect, linear drag `μ` on the relative
vorticity, hyperviscosity `ν∇⁸` (set so that the 2/3-rule cut-off wave is damped at rate
`damping`), and a steady Kolmogorov forcing of amplitude `A` at wavenumber `k_f`. The
Jacobian is computed on the grid and de-aliased by the 2/3 rule; waves beyond the cut-off
decay at rate `damping`. The tendency of `ψ` is that of `q` inverted.

The state is `ψ` flattened row-major (`y` then `x`), so every method, gate and covariance
sees a vector of `ny·nx`; `grid_shape` gives the field's shape back, `potential_vorticity`
the PV.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._dynamics import RK4, AbstractForwardModel, AbstractIntegrator


def wavenumbers(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer wavenumbers `(ky, kx)` of `rfft2` on a `2π`-periodic `ny × nx` grid, shaped
    `(ny, nx//2 + 1)`."""
    ky = np.fft.fftfreq(ny, 1.0 / ny)
    kx = np.fft.rfftfreq(nx, 1.0 / nx)
    KX, KY = np.meshgrid(kx, ky)
    return KY, KX


class QuasiGeostrophic(AbstractForwardModel):
    """One-layer QG on a doubly periodic `ny × nx` grid (see the module docstring).

    Defaults: `κ² = 4`, `β = 0.5`, `μ = 0.05`, `A = 1`, `k_f = 4`, `damping = 2`,
    `dt = 0.05` (RK4 is stable for `damping·16·dt < 2.8`). Keep `dt · max|u| / Δx` below
    about 1 at finer grids (halve `dt` per doubling of the grid).
    """

    ny: int = eqx.field(static=True, default=64)
    nx: int = eqx.field(static=True, default=64)
    kappa2: float = 4.0
    beta: float = 0.5
    drag: float = 0.05
    forcing: float = 1.0
    forcing_k: int = eqx.field(static=True, default=4)
    damping: float = 2.0
    dt: float = 0.05
    integrator: AbstractIntegrator = RK4()
    periodic: ClassVar[bool] = True

    def __check_init__(self):
        if self.ny < 8 or self.nx < 8 or self.ny % 2 or self.nx % 2:
            raise ValueError(
                f"QuasiGeostrophic needs even grid sizes >= 8, got ny={self.ny}, nx={self.nx}"
            )
        if not 0 < self.forcing_k < min(self.ny, self.nx) // 3:
            raise ValueError(
                f"QuasiGeostrophic: forcing_k must be in 1…{min(self.ny, self.nx) // 3 - 1} "
                f"(a resolved wave), got {self.forcing_k}"
            )

    @property
    def state_size(self) -> int:
        return self.ny * self.nx

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)

    @property
    def state_shape(self) -> tuple[int, int]:
        return self.grid_shape

    @property
    def state_dims(self) -> tuple[str, str]:
        return ("y", "x")

    def _spectral(self):
        KY, KX = wavenumbers(self.ny, self.nx)
        K2 = KY**2 + KX**2
        kmax = min(self.ny, self.nx) / 3.0
        dealias = (np.abs(KX) < kmax) & (np.abs(KY) < kmax)
        denominator = K2 + jnp.asarray(self.kappa2)
        positive = denominator > 0
        invert = jnp.where(positive, -1.0 / jnp.where(positive, denominator, 1.0), 0.0)
        hyper = self.damping * jnp.where(dealias, (K2 / kmax**2) ** 4, 1.0)
        return KY, KX, K2, dealias, invert, hyper

    def forcing_field(self):
        """The steady PV forcing `A cos(k_f y)` on the grid `(ny, nx)`."""
        y = 2 * np.pi * np.arange(self.ny) / self.ny
        column = self.forcing * jnp.asarray(np.cos(self.forcing_k * y))[:, None]
        return jnp.broadcast_to(column, self.grid_shape)

    def perturbation(self, key, std):
        """Smooth random noise of standard deviation `std` (white noise kept at wavenumbers
        below 8): white noise in `ψ` would be grid-scale PV noise of size `K²·std`."""
        KY, KX, *_ = self._spectral()
        noise = jax.random.normal(key, self.grid_shape)
        smooth = jnp.fft.irfft2(
            jnp.where(KY**2 + KX**2 < 64, jnp.fft.rfft2(noise), 0.0), s=self.grid_shape
        )
        return (std * smooth / jnp.std(smooth)).reshape(-1)

    def random_state(self, key, scale=1.0):
        """A smooth random `ψ` to spin up from (`perturbation` of std `0.1·scale`)."""
        return self.perturbation(key, 0.1 * scale)

    def potential_vorticity(self, x):
        """`q = ∇²ψ − κ²ψ` on the grid from a (flattened) state `ψ`."""
        _, _, K2, *_ = self._spectral()
        psi = x.reshape(self.grid_shape)
        return jnp.fft.irfft2(-(K2 + self.kappa2) * jnp.fft.rfft2(psi), s=self.grid_shape)

    def vector_field(self, x):
        KY, KX, K2, dealias, invert, hyper = self._spectral()
        shape = self.grid_shape
        ph = jnp.fft.rfft2(x.reshape(shape))
        qh = -(K2 + self.kappa2) * ph

        def grid(fh):
            return jnp.fft.irfft2(fh, s=shape)

        u, v = grid(-1j * KY * ph), grid(1j * KX * ph)
        qx, qy = grid(1j * KX * qh), grid(1j * KY * qh)
        jacobian = jnp.fft.rfft2(u * qx + v * qy) * dealias
        fh = jnp.fft.rfft2(self.forcing_field().astype(x.dtype))
        q_tendency = -jacobian - self.beta * 1j * KX * ph + self.drag * K2 * ph - hyper * qh + fh
        return grid(invert * q_tendency).reshape(-1)
