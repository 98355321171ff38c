"""A pure-JAX cycling loop: forecast → analyse, cycle after cycle, in one `lax.scan`."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._analysis import AbstractAnalysisMethod, Analysis, ObsWindow
from ._dynamics import AbstractForwardModel
from ._gates import Gate, GateReport
from ._metrics import rmse_t
from ._obs import AbstractObsOperator


class BackgroundCheck(eqx.Module):
    """The first-guess check of quality control: an observation is rejected when
    $|y − H(x_b)| > k\\sqrt{σ_o^2 + σ_b^2}$ (a gross error against the background).

    `check(background, obs) -> ObsWindow` with the rejected entries masked out. A
    non-finite background rejects every observation.
    """

    obs_operator: AbstractObsOperator
    obs_std: float
    background_std: float
    k: float = 5.0

    def __call__(self, background, obs: ObsWindow) -> ObsWindow:
        predicted = jax.vmap(self.obs_operator)(background)
        bound = self.k * jnp.sqrt(self.obs_std**2 + self.background_std**2)
        ok = jnp.abs(obs.values - predicted) <= bound  # False for NaN
        return ObsWindow(obs.values, obs.mask & ok)


def accepted_trajectory(background, analysis: Analysis, obs: ObsWindow, report=None):
    """The trajectory a cycle hands on: the analysis where the window had observations and
    the gate (if any) passed it, else the background (forecast-only or fallback) — or,
    when the gate carries an oracle's analysis (`Gate(oracle_fallback=True)`), that one in
    place of a rejected analysis, if it is finite."""
    has_obs = jnp.any(obs.mask)
    use = has_obs
    if report is not None:
        use = use & report.passed
    out = jnp.where(use, analysis.trajectory, background)
    if report is not None and report.oracle_trajectory is not None:
        oracle = report.oracle_trajectory
        take = has_obs & ~report.passed & jnp.all(jnp.isfinite(oracle))
        out = jnp.where(take, oracle, out)
    return out


class CycleOutput(eqx.Module):
    """Per cycle `c`: the background and analysis over its window `(C, W+1, n)`, and the
    analysis diagnostics (batched `Analysis` fields). Window `c` spans model steps
    `c·shift … c·shift + window`. With a gate: its reports, and `accepted`, the trajectory
    each cycle hands on — the analysis where the window had observations and the gate
    passed, else the background. `obs_mask`: the observations assimilated (after the
    background check, if any)."""

    background: jax.Array
    analysis: Analysis
    gate: GateReport | None = None
    accepted: jax.Array | None = None
    obs_mask: jax.Array | None = None


def run_cycles(
    model: AbstractForwardModel,
    method: AbstractAnalysisMethod,
    first_background,
    obs: ObsWindow,
    n_cycles: int,
    window: int,
    shift: int | None = None,
    gate: Gate | None = None,
    check: BackgroundCheck | None = None,
) -> CycleOutput:
    """Cycles `method` over `obs` (one row per model step).

    Each cycle forecasts the previous analysis over its window of `window` model steps (the
    background), assimilates the window's observations except its first row (assimilated by
    the previous cycle) and starts the next cycle from the analysis `shift` steps on
    (`shift = window`: back-to-back windows; `shift < window`: overlapping windows, as
    DAPPER's 4D-Var slides its lag).

    With a `gate`, a cycle whose analysis fails it hands on its background instead (the
    `fallback` policy): nothing after it uses the rejected analysis. With a `check`, each
    window's observations first go through the background check.
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
        if check is not None:
            window_obs = check(background, window_obs)
        analysis = method(background, window_obs)
        if gate is None:
            out = (background, analysis, None, None, window_obs.mask)
            return analysis.trajectory[shift], out
        report = gate(background, analysis, window_obs)
        accepted = accepted_trajectory(background, analysis, window_obs, report)
        return accepted[shift], (background, analysis, report, accepted, window_obs.mask)

    _, (backgrounds, analyses, reports, accepted, masks) = jax.lax.scan(
        one_cycle, jnp.asarray(first_background), jnp.arange(n_cycles)
    )
    return CycleOutput(
        background=backgrounds, analysis=analyses, gate=reports, accepted=accepted, obs_mask=masks
    )


def lead_forecasts(model: AbstractForwardModel, x, leads: tuple[int, ...]) -> jax.Array:
    """The forecast from `x` at the model steps `leads` (`(len(leads), n)`; `(0, n)` for
    none): a cycle's product forecast from its analysis."""
    if not leads:
        return jnp.zeros((0, jnp.shape(x)[-1]), jnp.asarray(x).dtype)
    return model.rollout(x, max(leads))[jnp.array(leads)]


def analysis_times(n_cycles: int, window: int, shift: int | None = None) -> jax.Array:
    """The model step of each cycle's window end (where its analysis is scored)."""
    shift = window if shift is None else shift
    return jnp.arange(n_cycles) * shift + window


def cycle_scores(
    out: CycleOutput, truth, window: int, shift: int | None = None, spinup: int = 0
) -> dict[str, jax.Array]:
    """Time-mean RMSE against `truth` (one row per model step) at each window's end, over
    the cycles after the first `spinup`: DAPPER's `rmse.a` (`"analysis"`) and `rmse.f`
    (`"background"`). With a gate, the analysis scored is the accepted trajectory (what each
    cycle handed on, and what the pipeline stores)."""
    n_cycles = out.background.shape[0]
    truth_end = truth[analysis_times(n_cycles, window, shift)][spinup:]
    analysis = out.analysis.trajectory if out.accepted is None else out.accepted
    return {
        "analysis": jnp.mean(rmse_t(analysis[spinup:, -1], truth_end)),
        "background": jnp.mean(rmse_t(out.background[spinup:, -1], truth_end)),
    }
