"""Posterior checks for learned methods: a classical oracle (strong 4DVar with its
Gauss–Newton / Laplace posterior), the agreement of a learned analysis with it, and
simulation-based calibration (SBC) of a sampler with a uniformity test."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._analysis import ObsWindow, map_times
from ._methods import StrongFourDVar


class LaplacePosterior(eqx.Module):
    """The oracle's posterior over a window: the strong-4DVar analysis `mean` `(T+1, n)`,
    the covariance `cov0` `(n, n)` of the initial state and the standard deviation `std`
    `(T+1, n)` of every state (the initial covariance carried by the tangent-linear
    model), and whether the minimiser converged (`successful`)."""

    mean: jax.Array
    std: jax.Array
    cov0: jax.Array
    successful: jax.Array


def laplace_posterior(oracle: StrongFourDVar, background, obs: ObsWindow) -> LaplacePosterior:
    """Strong 4DVar, then the Gauss–Newton Hessian at its analysis,

    $$A^{-1} = B^{-1} + \\sum_t (H_t M_{0→t})^T R_t^{-1} (H_t M_{0→t}),$$

    whose inverse is the Laplace approximation of the posterior of the initial state
    (exact for a linear model and operator). Forms `n × n` matrices: for small states
    (Lorenz models), not 2-D fields."""
    from ._analysis import AnalysisResult

    analysis = oracle(background, obs)
    x0 = analysis.initial
    T = background.shape[0] - 1
    model, H, R = oracle.model, oracle.obs_operator, oracle.obs_cov
    jac = jax.jacfwd(lambda x: model.rollout(x, T))(x0)  # (T+1, n, n)
    traj = analysis.trajectory

    def info(H_t, R_t, x, J, mask):
        G = H_t.linearise(x).as_matrix() @ J  # (m, n)
        RinvG = jax.vmap(lambda col: R_t.masked_solve(col, mask), in_axes=1, out_axes=1)(G)
        return G.T @ RinvG

    precision = jnp.linalg.inv(oracle.prior_cov.as_matrix()) + jnp.sum(
        map_times(info, obs, H, R, traj, jac, obs.mask), axis=0
    )
    cov0 = jnp.linalg.inv(0.5 * (precision + precision.T))
    var = jnp.einsum("tij,jk,tik->ti", jac, cov0, jac)
    return LaplacePosterior(
        mean=traj,
        std=jnp.sqrt(jnp.maximum(var, 0.0)),
        cov0=cov0,
        successful=analysis.result == AnalysisResult.successful,
    )


class PosteriorAgreement(eqx.Module):
    """The oracle gate of a learned method: `agreement(background, trajectory, obs)` →
    `(passed, max_sigma, fraction, oracle_trajectory)`. The learned analysis agrees when at least
    `min_fraction` of its states (at the window times `at`: `"start"`, `"end"` or `"all"`)
    lie within `k` oracle standard deviations of the oracle's analysis."""

    oracle: StrongFourDVar
    k: float = eqx.field(static=True, default=3.0)
    min_fraction: float = eqx.field(static=True, default=0.95)
    at: str = eqx.field(static=True, default="end")

    def __check_init__(self):
        if self.at not in ("start", "end", "all"):
            raise ValueError(f"PosteriorAgreement: at must be start, end or all, got {self.at!r}")
        if not (self.k > 0 and 0 < self.min_fraction <= 1):
            raise ValueError(
                f"PosteriorAgreement: need k > 0 and 0 < min_fraction <= 1, got k={self.k}, "
                f"min_fraction={self.min_fraction}"
            )

    def z_scores(self, posterior: LaplacePosterior, trajectory):
        z = jnp.abs(trajectory - posterior.mean) / jnp.maximum(posterior.std, 1e-12)
        return {"start": z[:1], "end": z[-1:], "all": z}[self.at]

    def __call__(self, background, trajectory, obs: ObsWindow):
        """**Returns** `(passed, max_sigma, fraction, oracle trajectory)`."""
        posterior = laplace_posterior(self.oracle, background, obs)
        z = self.z_scores(posterior, trajectory)
        fraction = jnp.mean(z <= self.k)
        max_sigma = jnp.max(z)
        passed = jnp.isfinite(max_sigma) & (fraction >= self.min_fraction)
        return passed, max_sigma, fraction, posterior.mean


# --- simulation-based calibration ------------------------------------------------------


def _chi2_sf(x, dof):
    return float(jax.scipy.special.gammaincc(dof / 2.0, x / 2.0))


class SBCReport(eqx.Module):
    """Simulation-based calibration (Talts et al. 2018): for each test statistic, the ranks
    of the true value among the posterior samples' (`ranks` `(statistics, cases)`, in
    `0…n_samples`), the χ² uniformity test of their histogram (`p_values`) and the
    verdict: `passed` when no p-value is below `alpha / statistics` (Bonferroni)."""

    ranks: np.ndarray
    p_values: np.ndarray
    names: tuple[str, ...] = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    passed: bool = eqx.field(static=True)

    def summary(self) -> str:
        verdict = "calibrated" if self.passed else "NOT calibrated"
        worst = int(np.argmin(self.p_values))
        return (
            f"SBC: {verdict} ({len(self.names)} statistics, {self.ranks.shape[1]} cases; "
            f"smallest p = {self.p_values[worst]:.2g} for {self.names[worst]}, "
            f"threshold {self.alpha / len(self.names):.2g})"
        )


def rank_uniformity(ranks, n_samples: int, n_bins: int = 10) -> np.ndarray:
    """χ² test of uniform ranks: per row of `ranks` `(statistics, cases)` with values in
    `0…n_samples`, the p-value of the histogram in `n_bins` equal bins."""
    ranks = np.asarray(ranks)
    edges = np.linspace(0, n_samples + 1, n_bins + 1)
    p = []
    for row in ranks:
        counts, _ = np.histogram(row, bins=edges)
        expected = len(row) * np.diff(edges) / (n_samples + 1)
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        p.append(_chi2_sf(chi2, n_bins - 1))
    return np.asarray(p)


def default_statistics(state_shape) -> dict[str, Callable]:
    """Test statistics of a window `(T, n)`: each component at the window end and start,
    the window-mean of each component, and the squared norm at the window end."""
    _, n = state_shape
    stats: dict[str, Callable] = {}
    for i in range(n):
        stats[f"x[end,{i}]"] = lambda x, i=i: x[-1, i]
        stats[f"x[0,{i}]"] = lambda x, i=i: x[0, i]
        stats[f"mean_t x[:,{i}]"] = lambda x, i=i: jnp.mean(x[:, i])
    stats["|x[end]|^2"] = lambda x: jnp.sum(x[-1] ** 2)
    return stats


def simulation_based_calibration(
    sample: Callable,
    truths,
    batch,
    key,
    n_samples: int = 99,
    statistics: dict[str, Callable] | None = None,
    n_bins: int = 10,
    alpha: float = 0.01,
    chunk: int = 64,
) -> SBCReport:
    """SBC of a posterior sampler on simulated cases.

    **Arguments:** `sample(batch, key, n)` → `(B, n, T, …)` posterior samples (e.g.
    `AmortizedPosterior.sample`); `truths` `(B, T, …)` the states the cases were simulated
    from (drawn from the prior the sampler was trained on); `batch` their observations;
    `n_samples` per case; `statistics` name → `f(state) → scalar` (default
    `default_statistics`); `alpha` the family-wise level of the test.
    """
    truths = jnp.asarray(truths)
    statistics = default_statistics(truths.shape[1:]) if statistics is None else statistics
    B = truths.shape[0]
    samples = []
    for start in range(0, B, chunk):
        part = jax.tree_util.tree_map(lambda a, s=start: a[s : s + chunk], batch)
        key, sub = jax.random.split(key)
        samples.append(sample(part, sub, n_samples))
    samples = jnp.concatenate(samples)
    ranks = []
    for f in statistics.values():
        f_true = jax.vmap(f)(truths)  # (B,)
        f_samp = jax.vmap(jax.vmap(f))(samples)  # (B, n)
        ranks.append(jnp.sum(f_samp < f_true[:, None], axis=1))
    ranks = np.asarray(jnp.stack(ranks))
    p = rank_uniformity(ranks, n_samples, n_bins)
    return SBCReport(
        ranks=ranks,
        p_values=p,
        names=tuple(statistics),
        n_bins=n_bins,
        alpha=alpha,
        passed=bool(np.all(p >= alpha / len(statistics))),
    )


def heldout_scores(method, windows, agreement: PosteriorAgreement | None = None) -> dict:
    """A method on held-out windows (a `Batch1D` with `background`): the RMSE at the window
    end of its analysis and of the background; with an `agreement`, also of the oracle's
    analysis, the fraction of windows the agreement passes, the median of their largest
    distance in oracle σ and the mean fraction of states within `k`. **Returns** floats."""

    def rmse_end(a):
        return float(jnp.sqrt(jnp.mean((a[:, -1] - windows.target[:, -1]) ** 2)))

    @jax.jit
    def analyse(bg, y, m):
        return method(bg, ObsWindow(y, m)).trajectory

    inputs = (windows.background, windows.input, windows.mask)
    analyses = jax.lax.map(lambda a: analyse(*a), inputs)
    scores = {
        "n_heldout": int(windows.input.shape[0]),
        "rmse_end": rmse_end(analyses),
        "rmse_end_background": rmse_end(windows.background),
    }
    if agreement is None:
        return scores

    @jax.jit
    def check(bg, traj, y, m):
        return agreement(bg, traj, ObsWindow(y, m))

    passed, max_sigma, fraction, oracle = jax.lax.map(
        lambda a: check(*a), (windows.background, analyses, windows.input, windows.mask)
    )
    return scores | {
        "rmse_end_oracle": rmse_end(oracle),
        "oracle_pass_fraction": float(jnp.mean(passed)),
        "oracle_median_max_sigma": float(jnp.median(max_sigma)),
        "oracle_mean_fraction_within_k": float(jnp.mean(fraction)),
    }
