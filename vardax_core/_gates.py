"""The gate of the cycle (step 4): may an analysis be used?

An analysis passes when it is finite, the background's innovations are consistent with
`H B Hᵀ + R` (χ²/dof within bounds), and no increment exceeds `increment_sigma`·σ_b.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from ._analysis import Analysis, ObsWindow, innovation_operators, innovation_solver
from ._cov import AbstractCovariance
from ._obs import AbstractObsOperator
from ._posterior import PosteriorAgreement


class GateReport(eqx.Module):
    """The gate's findings for one cycle (scalars; batched over cycles by `run_cycles`).

    - `passed`: all checks passed.
    - `finite`: the analysis is finite.
    - `chi2_dof`: $\\frac{1}{p}\\sum_t d_t^T (H B H^T + R)^{-1} d_t$ over the `p` observations
      (NaN without observations, which passes).
    - `innovation_mean`: mean of the background innovations `y − H(x_b)`.
    - `increment_max_sigma`: `max |x_a − x_b| / σ_b` where B describes the background
      error: at every window time (`increment_at="all"`, 3D methods, which analyse each
      time) or at the window start only (`"start"`, 4D methods, whose control variable is
      the initial state; their increments later in the window are the dynamics', which
      can exceed σ_b many times over in fast, chaotic components).
    - `n_obs`: observations in the window.
    - `oracle_max_sigma`, `oracle_fraction`: with an oracle (learned methods), the largest
      distance of the analysis from the oracle's in oracle standard deviations, and the
      fraction of states within `k` of them (NaN without an oracle).
    - `oracle_trajectory`: with an oracle and `oracle_fallback`, the oracle's analysis,
      which `accepted_trajectory` hands on in place of a rejected analysis.
    """

    passed: jax.Array
    finite: jax.Array
    chi2_dof: jax.Array
    innovation_mean: jax.Array
    increment_max_sigma: jax.Array
    n_obs: jax.Array
    oracle_max_sigma: jax.Array
    oracle_fraction: jax.Array
    oracle_trajectory: jax.Array | None = None


class Gate(eqx.Module):
    """`gate(background, analysis, obs) -> GateReport`.

    **Arguments:** the method's `obs_operator`, `prior_cov` and `obs_cov`;
    `chi2_dof_bounds` `(low, high)`; `increment_sigma` `k`; `increment_at` `"all"` or
    `"start"` (see `GateReport.increment_max_sigma`); `oracle` an optional
    `PosteriorAgreement` (learned methods: the analysis must agree with strong 4DVar's
    Laplace posterior); `oracle_fallback`: a rejected analysis is replaced by the
    oracle's (when that is finite) instead of the background.
    """

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    chi2_dof_bounds: tuple[float, float] = eqx.field(static=True, default=(0.05, 20.0))
    increment_sigma: float = eqx.field(static=True, default=10.0)
    increment_at: str = eqx.field(static=True, default="all")
    oracle: PosteriorAgreement | None = None
    oracle_fallback: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        lo, hi = self.chi2_dof_bounds
        if not 0 <= lo < hi:
            raise ValueError(
                f"Gate: chi2_dof_bounds must be 0 <= low < high, got {self.chi2_dof_bounds}"
            )
        if self.increment_at not in ("all", "start"):
            raise ValueError(
                f"Gate: increment_at must be 'all' or 'start', got {self.increment_at!r}"
            )
        if not self.increment_sigma > 0:
            raise ValueError(f"Gate: increment_sigma must be > 0, got {self.increment_sigma}")

    def _quadratic(self, xb, y, mask):
        _, _, _, S = innovation_operators(self.obs_operator, self.prior_cov, self.obs_cov, xb, mask)
        d = jnp.where(mask, y - self.obs_operator(xb), 0.0)
        solver = innovation_solver(self.prior_cov, self.obs_operator.obs_size)
        return jnp.vdot(d, lx.linear_solve(S, d, solver, throw=False).value), jnp.sum(d)

    def __call__(self, background, analysis: Analysis, obs: ObsWindow) -> GateReport:
        finite_background = jnp.all(jnp.isfinite(background))
        xb = jnp.where(finite_background, background, 0.0)
        q, d_sum = jax.vmap(self._quadratic)(xb, obs.values, obs.mask)
        n_obs = jnp.sum(obs.mask)
        chi2_dof = jnp.where(n_obs > 0, jnp.sum(q) / jnp.maximum(n_obs, 1), jnp.nan)
        sigma_b = jnp.sqrt(self.prior_cov.diagonal())
        delta = analysis.trajectory - background
        if self.increment_at == "start":
            delta = delta[:1]
        increment = jnp.max(jnp.abs(delta) / sigma_b)
        finite = jnp.all(jnp.isfinite(analysis.trajectory))
        lo, hi = self.chi2_dof_bounds
        chi2_ok = (n_obs == 0) | ((chi2_dof >= lo) & (chi2_dof <= hi))
        increment_ok = jnp.where(finite, increment <= self.increment_sigma, False)
        oracle_ok, oracle_max, oracle_fraction, oracle_traj = True, jnp.nan, jnp.nan, None
        if self.oracle is not None:
            oracle_ok, oracle_max, oracle_fraction, oracle_traj = self.oracle(
                xb, analysis.trajectory, obs
            )
            oracle_ok = oracle_ok | (n_obs == 0)
        return GateReport(
            passed=finite & finite_background & chi2_ok & increment_ok & oracle_ok,
            finite=finite,
            chi2_dof=chi2_dof,
            innovation_mean=jnp.where(n_obs > 0, d_sum.sum() / jnp.maximum(n_obs, 1), jnp.nan),
            increment_max_sigma=increment,
            n_obs=n_obs,
            oracle_max_sigma=jnp.asarray(oracle_max, float),
            oracle_fraction=jnp.asarray(oracle_fraction, float),
            oracle_trajectory=oracle_traj if self.oracle_fallback else None,
        )
