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
