"""A pure-JAX cycling loop: forecast → analyse, cycle after cycle, in one `lax.scan`."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._analysis import AbstractAnalysisMethod, Analysis, ObsWindow
from ._dynamics import AbstractForwardModel
from ._gates import Gate, GateReport
from ._metrics import rmse_t


class CycleOutput(eqx.Module):
    """Per cycle `c`: the background and analysis over its window `(C, W+1, n)`, and the
    analysis diagnostics (batched `Analysis` fields). Window `c` spans model steps
    `c·shift … c·shift + window`. With a gate: its reports, and `accepted`, the trajectory
    each cycle hands on — the analysis where the gate passed, else the background."""

    background: jax.Array
    analysis: Analysis
    gate: GateReport | None = None
    accepted: jax.Array | None = None


def run_cycles(
    model: AbstractForwardModel,
    method: AbstractAnalysisMethod,
    first_background,
    obs: ObsWindow,
    n_cycles: int,
    window: int,
    shift: int | None = None,
    gate: Gate | None = None,
) -> CycleOutput:
    """Cycles `method` over `obs` (one row per model step).

    Each cycle forecasts the previous analysis over its window of `window` model steps (the
    background), assimilates the window's observations except its first row (assimilated by
    the previous cycle) and starts the next cycle from the analysis `shift` steps on
    (`shift = window`: back-to-back windows; `shift < window`: overlapping windows, as
    DAPPER's 4D-Var slides its lag).

    With a `gate`, a cycle whose analysis fails it hands on its background instead (the
    `fallback` policy): nothing after it uses the rejected analysis.
    """
    shift = window if shift is None else shift
    if not 1 <= shift <= window:
        raise ValueError(
            f"run_cycles: need 1 <= shift <= window, got shift={shift}, window={window}"
        )
    needed = (n_cycles - 1) * shift + window + 1
    if obs.n_times < needed:
        raise ValueError(
            f"run_cycles: {n_cycles} cycles of window {window}, shift {shift} need {needed} "
            f"observation rows, got {obs.n_times}"
        )
    model.check_state(jnp.asarray(first_background), "first_background")

    def one_cycle(x_start, c):
        start = c * shift
        rows = jax.lax.dynamic_slice_in_dim(obs.values, start, window + 1)
        mask = jax.lax.dynamic_slice_in_dim(obs.mask, start, window + 1).at[0].set(False)
        background = model.rollout(x_start, window)
        window_obs = ObsWindow(rows, mask)
        analysis = method(background, window_obs)
        if gate is None:
            return analysis.trajectory[shift], (background, analysis, None, None)
        report = gate(background, analysis, window_obs)
        accepted = jnp.where(report.passed, analysis.trajectory, background)
        return accepted[shift], (background, analysis, report, accepted)

    _, (backgrounds, analyses, reports, accepted) = jax.lax.scan(
        one_cycle, jnp.asarray(first_background), jnp.arange(n_cycles)
    )
    return CycleOutput(background=backgrounds, analysis=analyses, gate=reports, accepted=accepted)


def analysis_times(n_cycles: int, window: int, shift: int | None = None) -> jax.Array:
    """The model step of each cycle's window end (where its analysis is scored)."""
    shift = window if shift is None else shift
    return jnp.arange(n_cycles) * shift + window


def cycle_scores(
    out: CycleOutput, truth, window: int, shift: int | None = None, spinup: int = 0
) -> dict[str, jax.Array]:
    """Time-mean RMSE against `truth` (one row per model step) at each window's end, over
    the cycles after the first `spinup`: DAPPER's `rmse.a` (`"analysis"`) and `rmse.f`
    (`"background"`)."""
    n_cycles = out.background.shape[0]
    truth_end = truth[analysis_times(n_cycles, window, shift)][spinup:]
    return {
        "analysis": jnp.mean(rmse_t(out.analysis.trajectory[spinup:, -1], truth_end)),
        "background": jnp.mean(rmse_t(out.background[spinup:, -1], truth_end)),
    }
