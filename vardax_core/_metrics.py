"""Scores against the truth (DAPPER's rmse.a / rmse.f, per block, per time)."""

import jax.numpy as jnp


def rmse_t(estimate, truth):
    """RMSE over the state at each time: `(time, n)` → `(time,)`."""
    return jnp.sqrt(jnp.mean((estimate - truth) ** 2, axis=-1))


def rmse(estimate, truth):
    """RMSE over every time and component (the seeds' `rmse_assim` / `rmse_total`)."""
    return jnp.sqrt(jnp.mean((estimate - truth) ** 2))


def block_rmse(estimate, truth, blocks: dict[str, slice]) -> dict[str, jnp.ndarray]:
    """RMSE of each named block of the state, e.g. `{"slow": model.slow, "fast": model.fast}`."""
    return {name: rmse(estimate[..., idx], truth[..., idx]) for name, idx in blocks.items()}


def assim_forecast_rmse(trajectory, truth, n_assim: int) -> dict[str, jnp.ndarray]:
    """The seeds' three scores of an analysis-then-forecast trajectory `(T_total+1, n)`:
    `rmse_assim` over times `0..n_assim`, `rmse_forecast` after, `rmse_total` over all."""
    return {
        "rmse_assim": rmse(trajectory[: n_assim + 1], truth[: n_assim + 1]),
        "rmse_forecast": rmse(trajectory[n_assim + 1 :], truth[n_assim + 1 :]),
        "rmse_total": rmse(trajectory, truth),
    }


def window_end_scores(analysis, background, truth=None, chi2_dof=None) -> dict[str, jnp.ndarray]:
    """What a report of a run of cycles shows, from the states at each window end
    `(C, *state)` (and the truth there, NaN where unknown):

    - `rmse_analysis`, `rmse_background` `(C,)` against the truth over the state (NaN
      entries left out), and their time means `mean_rmse_analysis`, `mean_rmse_background`;
    - without a truth, `rms_increment` `(C,)`: the RMS of analysis − background;
    - with the innovation statistics `chi2_dof` `(C,)`, `chi2_dof_median` of the finite ones.
    """
    analysis, background = jnp.asarray(analysis), jnp.asarray(background)
    axes = tuple(range(1, analysis.ndim))
    out = {}
    if truth is not None:
        truth = jnp.asarray(truth)
        for name, estimate in (("analysis", analysis), ("background", background)):
            per_cycle = jnp.sqrt(jnp.nanmean((estimate - truth) ** 2, axis=axes))
            out[f"rmse_{name}"] = per_cycle
            out[f"mean_rmse_{name}"] = jnp.nanmean(per_cycle)
    else:
        out["rms_increment"] = jnp.sqrt(jnp.mean((analysis - background) ** 2, axis=axes))
    if chi2_dof is not None:
        chi2 = jnp.asarray(chi2_dof)
        out["chi2_dof_median"] = jnp.nanmedian(jnp.where(jnp.isfinite(chi2), chi2, jnp.nan))
    return out
