"""The gate of the cycle (step 4): may an analysis be used?

An analysis passes when the background and the analysis are finite, the background's
innovations are consistent with `H B Hᵀ + R` (χ²/dof within bounds), no increment exceeds
`increment_sigma`·σ_b, and — with an oracle (learned methods) — it agrees with the
oracle's posterior. Each check has its flag in the report; `GATE_CHECKS` names them and
`GateReport.failures` packs the failed ones into one code.

For an ensemble (a background `(N, W+1, n)`) each innovation is measured against its
variance as the ensemble predicts it, `diag(H Pₑ Hᵀ) + σ_o²` (spread against error: a
diverging ensemble, whose spread is far below its error, fails χ²; R is taken diagonal
here, whitened), and the ensemble must not have collapsed (its mean spread at the window
end at least `min_spread`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ._analysis import (
    AbstractAnalysisMethod,
    Analysis,
    ObsWindow,
    innovation_operators,
    innovation_solver,
    map_times,
)
from ._cov import AbstractCovariance
from ._obs import AbstractObsOperator
from ._posterior import PosteriorAgreement

GATE_CHECKS = ("background_finite", "analysis_finite", "chi2", "increment", "oracle", "spread")
"""The gate's checks, in the order of the bits of `GateReport.failures`."""


class GateReport(eqx.Module):
    """The gate's findings for one cycle (scalars; batched over cycles by `run_cycles`).

    Flags, one per check (`GATE_CHECKS`):
    - `background_finite`, `finite` (the analysis), `chi2_ok`, `increment_ok`, `oracle_ok`;
      `passed`: all of them.

    Values:
    - `chi2_dof`: $\\frac{1}{p}\\sum_t d_t^T (H B H^T + R)^{-1} d_t$ over the `p` observations
      (NaN without observations, which passes).
    - `innovation_mean`: mean of the background innovations `y − H(x_b)`.
    - `increment_max_sigma`: `max |x_a − x_b| / σ_b` where B (for an ensemble, its spread)
      describes the background error: at every window time for a 3D method (which analyses each time), at the
      window start only for a 4D one (whose control variable is the initial state; its
      increments later in the window are the dynamics', which can exceed σ_b many times
      over in fast, chaotic components).
    - `n_obs`: observations in the window.
    - `oracle_max_sigma`, `oracle_fraction`: with an oracle (learned methods), the largest
      distance of the analysis from the oracle's in oracle standard deviations, and the
      fraction of states within `k` of them (NaN without an oracle).
    - `oracle_trajectory`: with an oracle and `oracle_fallback`, the oracle's analysis,
      which `accepted_trajectory` hands on in place of a rejected analysis.
    - `spread`, `spread_ok`: an ensemble's background spread (the standard deviation over
      members, averaged over the state at the window end) and whether it is at least the
      gate's `min_spread` (NaN and true without an ensemble).
    """

    passed: jax.Array
    background_finite: jax.Array
    finite: jax.Array
    chi2_ok: jax.Array
    increment_ok: jax.Array
    oracle_ok: jax.Array
    chi2_dof: jax.Array
    innovation_mean: jax.Array
    increment_max_sigma: jax.Array
    n_obs: jax.Array
    oracle_max_sigma: jax.Array
    oracle_fraction: jax.Array
    oracle_trajectory: jax.Array | None = None
    spread: jax.Array | float = float("nan")
    spread_ok: jax.Array | bool = True

    @property
    def failures(self) -> jax.Array:
        """The failed checks as one code: bit `k` set when `GATE_CHECKS[k]` failed (0: passed)."""
        flags = (self.background_finite, self.finite, self.chi2_ok, self.increment_ok)
        flags += (self.oracle_ok, self.spread_ok)
        return sum(jnp.where(ok, 0, 1 << k) for k, ok in enumerate(flags))


def failed_checks(code) -> tuple[str, ...]:
    """The names of the checks a `GateReport.failures` code says failed."""
    code = int(code)
    return tuple(name for k, name in enumerate(GATE_CHECKS) if code >> k & 1)


class Gate(eqx.Module):
    """`gate(background, analysis, obs) -> GateReport`.

    **Arguments:** the method's `obs_operator`, `prior_cov` and `obs_cov`;
    `chi2_dof_bounds` `(low, high)`; `increment_sigma` `k`; `increments_at_start`: measure
    increments at the window start only (4D methods, see `GateReport.increment_max_sigma`;
    `Gate.for_method` asks the method); `oracle` an optional `PosteriorAgreement` (learned
    methods: the analysis must agree with strong 4DVar's Laplace posterior);
    `oracle_fallback`: a rejected analysis is replaced by the oracle's (when that is
    finite) instead of the background; `min_spread`: the floor of an ensemble's spread.
    """

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    chi2_dof_bounds: tuple[float, float] = eqx.field(static=True, default=(0.05, 20.0))
    increment_sigma: float = eqx.field(static=True, default=10.0)
    increments_at_start: bool = eqx.field(static=True, default=False)
    oracle: PosteriorAgreement | None = None
    oracle_fallback: bool = eqx.field(static=True, default=False)
    min_spread: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        lo, hi = self.chi2_dof_bounds
        if not 0 <= lo < hi:
            raise ValueError(
                f"Gate: chi2_dof_bounds must be 0 <= low < high, got {self.chi2_dof_bounds}"
            )
        if not self.increment_sigma > 0:
            raise ValueError(f"Gate: increment_sigma must be > 0, got {self.increment_sigma}")

    @classmethod
    def for_method(cls, method: AbstractAnalysisMethod, **kwargs) -> "Gate":
        """The gate of `method`'s analyses: its `H`, `B` and `R`, increments measured where
        its control variable lives (`method.four_dimensional`); `kwargs` as for `Gate`."""
        return cls(
            method.obs_operator,
            method.prior_cov,
            method.obs_cov,
            increments_at_start=method.four_dimensional,
            **kwargs,
        )

    def _quadratic(self, obs_operator, obs_cov, xb, y, mask):
        _, _, _, S = innovation_operators(obs_operator, self.prior_cov, obs_cov, xb, mask)
        d = jnp.where(mask, y - obs_operator(xb), 0.0)
        solver = innovation_solver(self.prior_cov, obs_operator.obs_size)
        return jnp.vdot(d, lx.linear_solve(S, d, solver, throw=False).value), jnp.sum(d)

    def _ensemble_quadratic(self, obs_operator, obs_cov, members, y, mask):
        # each innovation against its own predicted variance, the members' variance in that
        # observation plus its error's (the full H Pₑ Hᵀ has rank N − 1, far below the
        # observations' count on a field, and would take every unsampled direction for error)
        predicted = jax.vmap(obs_operator)(members)
        mean = jnp.mean(predicted, axis=0)
        spread = jax.vmap(lambda v: obs_cov.masked_whiten(v, mask))(predicted - mean)
        raw = jnp.where(mask, y - mean, 0.0)
        d = obs_cov.masked_whiten(raw, mask)
        variance = 1.0 + jnp.sum(spread**2, axis=0) / (members.shape[0] - 1.0)
        return jnp.sum(jnp.where(mask, d**2 / variance, 0.0)), jnp.sum(raw)

    def __call__(self, background, analysis: Analysis, obs: ObsWindow) -> GateReport:
        background_finite = jnp.all(jnp.isfinite(background))
        ensemble = jnp.ndim(background) == 3  # members first
        if ensemble:
            members = jnp.where(background_finite, background, 0.0)
            xb = jnp.mean(members, axis=0)
            q, d_sum = map_times(
                self._ensemble_quadratic,
                obs,
                self.obs_operator,
                self.obs_cov,
                jnp.swapaxes(members, 0, 1),
                obs.values,
                obs.mask,
            )
            spread = jnp.mean(jnp.std(members[:, -1], axis=0, ddof=1))
            spread_ok = spread >= self.min_spread
        else:
            xb = jnp.where(background_finite, background, 0.0)
            q, d_sum = map_times(
                self._quadratic, obs, self.obs_operator, self.obs_cov, xb, obs.values, obs.mask
            )
            spread, spread_ok = jnp.nan, jnp.asarray(True)
        n_obs = jnp.sum(obs.mask)
        chi2_dof = jnp.where(n_obs > 0, jnp.sum(q) / jnp.maximum(n_obs, 1), jnp.nan)
        sigma_b = jnp.sqrt(self.prior_cov.diagonal())
        if ensemble:  # the ensemble's own background error, where it has spread
            spread_b = jnp.std(members, axis=0, ddof=1)
            sigma_b = jnp.where(spread_b > 0, spread_b, sigma_b)
        delta = analysis.trajectory - xb
        if self.increments_at_start:
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
        oracle_ok = jnp.asarray(oracle_ok)
        return GateReport(
            passed=finite & background_finite & chi2_ok & increment_ok & oracle_ok & spread_ok,
            background_finite=background_finite,
            finite=finite,
            chi2_ok=chi2_ok,
            increment_ok=increment_ok,
            oracle_ok=oracle_ok,
            chi2_dof=chi2_dof,
            innovation_mean=jnp.where(n_obs > 0, d_sum.sum() / jnp.maximum(n_obs, 1), jnp.nan),
            increment_max_sigma=increment,
            n_obs=n_obs,
            oracle_max_sigma=jnp.asarray(oracle_max, float),
            oracle_fraction=jnp.asarray(oracle_fraction, float),
            oracle_trajectory=oracle_traj if self.oracle_fallback else None,
            spread=jnp.asarray(spread, float),
            spread_ok=spread_ok,
        )

    def explain(self, report: GateReport) -> str:
        """What failed, in words, with the values and the bounds (`""` when it passed), for
        one cycle's concrete report."""
        value = {k: np.asarray(getattr(report, k)).item() for k in _VALUES}
        flags = {k: bool(np.asarray(getattr(report, k))) for k in _FLAGS}
        lo, hi = self.chi2_dof_bounds
        problems = []
        if not flags["background_finite"]:
            problems.append("the background is not finite")
        if not flags["finite"]:
            problems.append("the analysis is not finite")
        if not flags["chi2_ok"]:
            problems.append(f"innovation chi2/dof {value['chi2_dof']:.3g} outside [{lo}, {hi}]")
        if flags["finite"] and not flags["increment_ok"]:
            problems.append(
                f"increment {value['increment_max_sigma']:.3g} sigma_b above {self.increment_sigma}"
            )
        if not flags["spread_ok"]:
            problems.append(
                f"ensemble spread {value['spread']:.3g} below min_spread {self.min_spread} "
                "(collapsed)"
            )
        if not flags["oracle_ok"] and self.oracle is not None:
            o = self.oracle
            problems.append(
                f"{value['oracle_fraction']:.0%} of the analysis within {o.k} sigma of the "
                f"strong-4DVar oracle (needs {o.min_fraction:.0%}; worst "
                f"{value['oracle_max_sigma']:.3g} sigma)"
            )
        return "; ".join(problems)


_FLAGS = ("background_finite", "finite", "chi2_ok", "increment_ok", "oracle_ok", "spread_ok")
_VALUES = ("chi2_dof", "increment_max_sigma", "oracle_fraction", "oracle_max_sigma", "spread")
