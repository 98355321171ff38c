"""Error covariances as lineax operators, each with the square root `C = L Lᵀ` that the
control-variable transform `δx = L χ` needs.

Final classes: `ScaledIdentityCovariance`, `DiagonalCovariance`, `DenseCovariance`.
Constructors: `periodic_covariance` (Gaussian or Matérn-3/2 correlation on a 1-D ring,
for Lorenz-96) and `climatological_covariance` (the sample covariance of a long free run,
scaled — what DAPPER's 3D-Var uses).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class AbstractCovariance(eqx.Module):
    """A symmetric positive-definite covariance `C` of size `n × n`, and its square root `L`.

    `matrix_free`: products are cheap but the matrix is never formed (solves with
    operators built from it should be iterative)."""

    matrix_free: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """`n`."""

    @abc.abstractmethod
    def as_operator(self) -> lx.AbstractLinearOperator:
        """`C` as a lineax operator tagged positive semidefinite (and symmetric)."""

    @abc.abstractmethod
    def sqrt_operator(self) -> lx.AbstractLinearOperator:
        """`L` with `C = L Lᵀ` (lower triangular, diagonal or a scaled identity)."""

    @abc.abstractmethod
    def masked_operator(self, mask: jax.Array) -> lx.AbstractLinearOperator:
        """`M C M + (I − M)` for the 0/1 diagonal `M = diag(mask)`.

        Solving with it on a vector that is zero where `mask` is false gives exactly the
        solve with the sub-covariance of the observed components: missing observations drop
        out of the cost whatever the correlations.
        """

    def mv(self, v: jax.Array) -> jax.Array:
        """`C v`."""
        return self.as_operator().mv(v)

    def sqrt_mv(self, v: jax.Array) -> jax.Array:
        """`L v`."""
        return self.sqrt_operator().mv(v)

    def sqrt_T_mv(self, v: jax.Array) -> jax.Array:
        """`Lᵀ v`."""
        return self.sqrt_operator().transpose().mv(v)

    def inv_sqrt_mv(self, v: jax.Array) -> jax.Array:
        """`L⁻¹ v`: the control variable `χ` of an increment `v`."""
        return lx.linear_solve(self.sqrt_operator(), v, throw=False).value

    def masked_solve(self, v: jax.Array, mask: jax.Array) -> jax.Array:
        """`C_oo⁻¹ v_o` on the observed components (zero elsewhere; NaN if `v_o` is not
        finite — only finite vectors reach the solver, whose derivative rules reject others)."""
        v = jnp.where(mask, v, 0.0)
        finite = jnp.all(jnp.isfinite(v))
        solved = self._masked_solve_finite(jnp.where(finite, v, 0.0), mask)
        return jnp.where(finite, jnp.where(mask, solved, 0.0), jnp.nan)

    def _masked_solve_finite(self, v, mask):
        # overridden with a direct division by the diagonal covariances (a documented fast
        # path: they need no solver)
        return lx.linear_solve(self.masked_operator(mask), v, throw=False).value

    def masked_whiten(self, v: jax.Array, mask: jax.Array) -> jax.Array:
        """`w` with `|w|² = v_oᵀ C_oo⁻¹ v_o`: the residual a least-squares solver minimises.

        `w = L_m⁻¹ v_m` for the Cholesky factor `L_m` of the masked covariance.
        """
        v = jnp.where(mask, v, 0.0)
        chol = jnp.linalg.cholesky(self.masked_operator(mask).as_matrix())
        return jax.scipy.linalg.solve_triangular(chol, v, lower=True)

    def masked_inv_quad(self, v: jax.Array, mask: jax.Array) -> jax.Array:
        """`v_oᵀ C_oo⁻¹ v_o`: the squared Mahalanobis norm over the observed components
        (`inf` if `v_o` is not finite, so a minimiser's line search backs off)."""
        v = jnp.where(mask, v, 0.0)
        finite = jnp.all(jnp.isfinite(v))
        safe = jnp.where(finite, v, 0.0)
        return jnp.where(finite, jnp.vdot(safe, self._masked_solve_finite(safe, mask)), jnp.inf)

    def inv_quad(self, v: jax.Array) -> jax.Array:
        """`vᵀ C⁻¹ v = |L⁻¹ v|²`."""
        w = self.inv_sqrt_mv(v)
        return jnp.vdot(w, w)

    def as_matrix(self) -> jax.Array:
        return self.as_operator().as_matrix()

    def diagonal(self) -> jax.Array:
        """The variances: the diagonal of `C`."""
        return jnp.diag(self.as_matrix())


class ScaledIdentityCovariance(AbstractCovariance):
    """`C = variance · I`."""

    n: int = eqx.field(static=True)
    variance: float | jax.Array

    def __check_init__(self):
        if _is_concrete(self.variance) and not float(np.asarray(self.variance)) > 0:
            raise ValueError(f"ScaledIdentityCovariance: variance must be > 0, got {self.variance}")

    @property
    def size(self):
        return self.n

    def _diag(self, dtype=None):
        return jnp.full((self.n,), self.variance, dtype=dtype)

    def as_operator(self):
        return lx.DiagonalLinearOperator(self._diag())

    def sqrt_operator(self):
        return lx.DiagonalLinearOperator(jnp.sqrt(self._diag()))

    def masked_operator(self, mask):
        return lx.DiagonalLinearOperator(jnp.where(mask, self.variance, 1.0))

    def masked_whiten(self, v, mask):
        return jnp.where(mask, v / jnp.sqrt(self.variance), 0.0)

    def _masked_solve_finite(self, v, mask):
        return v / self.variance

    def diagonal(self):
        return self._diag()

    def inv_sqrt_mv(self, v):
        return v / jnp.sqrt(self.variance)


class DiagonalCovariance(AbstractCovariance):
    """`C = diag(variances)`."""

    variances: jax.Array = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        if self.variances.ndim != 1:
            raise ValueError(
                f"DiagonalCovariance: variances must be 1-D, got shape {self.variances.shape}"
            )
        if _is_concrete(self.variances) and not np.all(np.asarray(self.variances) > 0):
            bad = np.flatnonzero(~(np.asarray(self.variances) > 0))
            raise ValueError(
                f"DiagonalCovariance: variances must all be > 0 (finite); bad entries at {bad[:10].tolist()}"
            )

    @property
    def size(self):
        return self.variances.shape[0]

    def as_operator(self):
        return lx.DiagonalLinearOperator(self.variances)

    def sqrt_operator(self):
        return lx.DiagonalLinearOperator(jnp.sqrt(self.variances))

    def masked_operator(self, mask):
        return lx.DiagonalLinearOperator(jnp.where(mask, self.variances, 1.0))

    def masked_whiten(self, v, mask):
        return jnp.where(mask, v / jnp.sqrt(self.variances), 0.0)

    def _masked_solve_finite(self, v, mask):
        return v / self.variances

    def diagonal(self):
        return self.variances

    def inv_sqrt_mv(self, v):
        return v / jnp.sqrt(self.variances)


class DenseCovariance(AbstractCovariance):
    """A full covariance matrix, with its lower Cholesky factor as the square root.

    Raises `ValueError` at construction if the matrix is not square, not symmetric, or not
    positive definite (the message gives the smallest eigenvalue).
    """

    matrix: jax.Array
    cholesky: jax.Array

    def __init__(self, matrix):
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"DenseCovariance: matrix must be square, got shape {matrix.shape}")
        if _is_concrete(matrix):
            m = np.asarray(matrix, dtype=np.float64)
            if not np.all(np.isfinite(m)):
                raise ValueError("DenseCovariance: matrix has non-finite entries")
            asym = np.max(np.abs(m - m.T)) / max(np.max(np.abs(m)), 1e-300)
            if asym > 1e-6:
                raise ValueError(
                    f"DenseCovariance: matrix is not symmetric (relative asymmetry {asym:.2e})"
                )
            eig_min = float(np.linalg.eigvalsh(m)[0])
            if not eig_min > 0:
                raise ValueError(
                    "DenseCovariance: matrix is not positive definite "
                    f"(smallest eigenvalue {eig_min:.3e}); a covariance must be SPD"
                )
        self.matrix = matrix
        self.cholesky = jnp.linalg.cholesky(matrix)

    @property
    def size(self):
        return self.matrix.shape[0]

    def as_operator(self):
        return lx.MatrixLinearOperator(
            self.matrix, (lx.symmetric_tag, lx.positive_semidefinite_tag)
        )

    def sqrt_operator(self):
        return lx.MatrixLinearOperator(self.cholesky, lx.lower_triangular_tag)

    def masked_operator(self, mask):
        m = mask.astype(self.matrix.dtype)
        masked = self.matrix * m[:, None] * m[None, :] + jnp.diag(1.0 - m)
        return lx.MatrixLinearOperator(masked, (lx.symmetric_tag, lx.positive_semidefinite_tag))


def periodic_covariance(
    n: int, length_scale: float, variance: float = 1.0, kind: str = "gaussian"
) -> DenseCovariance:
    """A stationary correlation on a ring of `n` sites, times `variance`.

    The distance between sites `i, j` is the chord `(n/π) sin(π|i − j|/n)` (≈ `|i − j|` for
    near neighbours), which keeps the Gaussian and Matérn-3/2 kernels positive definite on
    the ring for every `length_scale`.
    """
    if kind not in ("gaussian", "matern32"):
        raise ValueError(
            f"periodic_covariance: kind must be 'gaussian' or 'matern32', got {kind!r}"
        )
    if not length_scale > 0:
        raise ValueError(f"periodic_covariance: length_scale must be > 0, got {length_scale}")
    idx = np.arange(n)
    lag = np.abs(idx[:, None] - idx[None, :])
    r = (n / np.pi) * np.sin(np.pi * lag / n) / length_scale
    if kind == "gaussian":
        corr = np.exp(-0.5 * r**2)
    else:
        corr = (1.0 + np.sqrt(3.0) * r) * np.exp(-np.sqrt(3.0) * r)
    # a tiny nugget keeps very long length scales numerically SPD
    corr = corr + 1e-8 * np.eye(n)
    return DenseCovariance(variance * jnp.asarray(corr))


def sample_covariance(trajectory) -> np.ndarray:
    """The sample covariance `(n, n)` of the states of a long free run `(time, n)` (float64)."""
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[0] <= traj.shape[1]:
        raise ValueError(
            "climatological_covariance: need a (time, n) free run with more times than "
            f"state components, got shape {traj.shape}"
        )
    return np.cov(traj, rowvar=False)


def scaled_covariance(cov, scale: float = 1.0, nugget: float = 0.0) -> DenseCovariance:
    """`scale · cov + nugget · I` as a `DenseCovariance` (`cov` symmetrised first)."""
    if not scale > 0 or not nugget >= 0:
        raise ValueError(
            f"climatological_covariance: need scale > 0 and nugget >= 0, got {scale}, {nugget}"
        )
    cov = np.asarray(cov, dtype=np.float64)
    cov = scale * 0.5 * (cov + cov.T) + nugget * np.eye(cov.shape[0])
    return DenseCovariance(jnp.asarray(cov))


def climatological_covariance(
    trajectory: jax.Array, scale: float = 1.0, nugget: float = 0.0
) -> DenseCovariance:
    """`scale · cov(trajectory) + nugget · I`: the sample covariance of the states of a long
    free run `(time, n)`, scaled, plus an optional white variance `nugget` — forecast errors
    hold more small-scale variance, relative to their large scales, than climatology does.
    """
    return scaled_covariance(sample_covariance(trajectory), scale, nugget)


class SpectralCovariance(AbstractCovariance):
    """A stationary, homogeneous covariance on a periodic grid — a ring `(n,)` or a doubly
    periodic `(ny, nx)` field, flattened row-major — applied matrix-free with FFTs:
    `C v = σ² F⁻¹ S F v`.

    `S` is the spectrum of a Gaussian correlation of `length_scale` grid cells (periodic
    minimum-image distances), floored at `1e-8·max S` so that `C` is positive definite,
    and normalised to unit variance. The square root `L = σ F⁻¹ S^{1/2} F` is symmetric,
    so `Lᵀ = L`. Costs `O(n log n)` per product: no `n × n` matrix is ever formed.
    """

    matrix_free: ClassVar[bool] = True
    shape: tuple[int, ...] = eqx.field(static=True)
    variance: float
    spectrum: jax.Array  # S on the rfftn half-space, (…, n_last//2 + 1)

    def __init__(self, shape, length_scale: float, variance: float = 1.0):
        shape = tuple(int(s) for s in np.atleast_1d(shape))
        if len(shape) not in (1, 2) or min(shape) < 2:
            raise ValueError(f"SpectralCovariance: shape must be (n,) or (ny, nx), got {shape}")
        if not length_scale > 0 or not variance > 0:
            raise ValueError(
                "SpectralCovariance: length_scale and variance must be > 0, got "
                f"{length_scale}, {variance}"
            )
        axes = np.meshgrid(
            *(np.minimum(np.arange(n), n - np.arange(n)) for n in shape), indexing="ij"
        )
        kernel = np.exp(-0.5 * sum(d.astype(float) ** 2 for d in axes) / length_scale**2)
        full = np.real(np.fft.fftn(kernel))
        full = np.maximum(full, 1e-8 * full.max())
        full = full / full.mean()  # the diagonal of the circulant is the spectrum's mean
        self.shape = shape
        self.variance = float(variance)
        self.spectrum = jnp.asarray(full[..., : shape[-1] // 2 + 1])

    @property
    def size(self):
        return int(np.prod(self.shape))

    def _filter(self, v, multiplier):
        field = v.reshape(self.shape)
        return jnp.fft.irfftn(multiplier * jnp.fft.rfftn(field), s=self.shape).reshape(v.shape)

    def mv(self, v):
        return self._filter(v, self.variance * self.spectrum)

    def sqrt_mv(self, v):
        return self._filter(v, jnp.sqrt(self.variance * self.spectrum))

    def sqrt_T_mv(self, v):
        return self.sqrt_mv(v)

    def inv_sqrt_mv(self, v):
        return self._filter(v, 1.0 / jnp.sqrt(self.variance * self.spectrum))

    def _structure(self):
        return jax.ShapeDtypeStruct((self.size,), self.spectrum.dtype)

    def as_operator(self):
        return lx.FunctionLinearOperator(
            self.mv, self._structure(), (lx.symmetric_tag, lx.positive_semidefinite_tag)
        )

    def sqrt_operator(self):
        return lx.FunctionLinearOperator(
            self.sqrt_mv, self._structure(), (lx.symmetric_tag, lx.positive_semidefinite_tag)
        )

    def masked_operator(self, mask):
        m = mask.astype(self.spectrum.dtype)
        return lx.FunctionLinearOperator(
            lambda v: m * self.mv(m * v) + (1.0 - m) * v,
            self._structure(),
            (lx.symmetric_tag, lx.positive_semidefinite_tag),
        )

    def diagonal(self):
        return jnp.full((self.size,), self.variance, dtype=self.spectrum.dtype)
