"""One cycle of data assimilation, written once: `cycle_step`, and `run_cycles`, the
`lax.scan` of it.

A cycle forecasts the state it starts from over its window (the background), screens the
window's observations against it (the background check), runs the analysis method, gates
the analysis, hands on the accepted trajectory (the analysis, or the background — or a
learned method's oracle — when the gate rejects it) and forecasts the product from the
accepted state at the window end. The pipeline's per-cycle steps call the named pieces
(`Cycle.forecast`, `Cycle.assimilate`, `Cycle.judge`, `Cycle.product`); block mode scans
`cycle_step`, which is their composition.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._analysis import AbstractAnalysisMethod, Analysis, ObsWindow, predicted_obs
from ._dynamics import AbstractForwardModel
from ._gates import Gate, GateReport
from ._metrics import rmse_t
from ._obs import AbstractObsOperator

HANDED_ON = ("analysis", "background", "oracle")
"""What a cycle hands on (`CycleRecord.handed_on`): its analysis, its background (a
window without observations, or an analysis the gate rejected), or the oracle's analysis
in place of a rejected learned one."""


class BackgroundCheck(eqx.Module):
    """The first-guess check of quality control: an observation is rejected when
    $|y − H(x_b)| > k\\sqrt{σ_o^2 + σ_b^2}$ (a gross error against the background), with
    `σ_o` each observation's own error when the window carries them (else `obs_std`).

    `check(background, obs) -> ObsWindow` with the rejected entries masked out. A
    non-finite background rejects every observation.
    """

    obs_operator: AbstractObsOperator
    obs_std: float
    background_std: float
    k: float = 5.0

    def __call__(self, background, obs: ObsWindow) -> ObsWindow:
        predicted = predicted_obs(self.obs_operator, background, obs)
        sigma_o = self.obs_std if obs.error_std is None else obs.error_std
        bound = self.k * jnp.sqrt(sigma_o**2 + self.background_std**2)
        ok = jnp.abs(obs.values - predicted) <= bound  # False for NaN
        return eqx.tree_at(lambda o: o.mask, obs, obs.mask & ok)


def accepted_trajectory(background, analysis: Analysis, obs: ObsWindow, report=None):
    """The trajectory a cycle hands on: the analysis where the window had observations and
    the gate (if any) passed it, else the background (forecast-only or fallback) — or,
    when the gate carries an oracle's analysis (`Gate(oracle_fallback=True)`), that one in
    place of a rejected analysis, if it is finite."""
    return _hand_on(background, analysis, obs, report)[0]


def _hand_on(background, analysis: Analysis, obs: ObsWindow, report: GateReport | None):
    """`(trajectory, HANDED_ON code)` of what the cycle hands on."""
    has_obs = jnp.any(obs.mask)
    use = has_obs if report is None else has_obs & report.passed
    out = jnp.where(use, analysis.trajectory, background)
    code = jnp.where(use, 0, 1)
    if report is not None and report.oracle_trajectory is not None:
        oracle = report.oracle_trajectory
        take = has_obs & ~report.passed & jnp.all(jnp.isfinite(oracle))
        out = jnp.where(take, oracle, out)
        code = jnp.where(take, 2, code)
    return out, code


class CycleRecord(eqx.Module):
    """What one cycle produced (batched over cycles by `run_cycles`: a leading axis).

    - `background`, `analysis` (an `Analysis`), `accepted`: `(W+1, n)` over the window;
      `accepted` is what the cycle hands on (see `handed_on`, an index of `HANDED_ON`).
    - `gate`: the gate's `GateReport` (`None` for a cycle without a gate).
    - `obs_mask`: `(W+1, m)` the observations assimilated (after the background check).
    - `forecast`: `(L, n)` the product forecast at the lead steps after the window end.
    """

    background: jax.Array
    analysis: Analysis
    gate: GateReport | None
    accepted: jax.Array
    handed_on: jax.Array
    obs_mask: jax.Array
    forecast: jax.Array


CycleOutput = CycleRecord
"""The records of a run of cycles (`run_cycles`): `CycleRecord`s batched over cycles."""


class Cycle(eqx.Module):
    """One experiment's cycle: the strategies of its steps and its timing.

    **Arguments:**
    - `model`: the forward model; `method`: the analysis method.
    - `gate`: a `Gate` (`None`: every analysis is used); `check`: a `BackgroundCheck`
      (`None`: no gross-error check).
    - `window`: model steps per assimilation window; `leads`: model steps after the window
      end of the product forecast.
    """

    model: AbstractForwardModel
    method: AbstractAnalysisMethod
    gate: Gate | None = None
    check: BackgroundCheck | None = None
    window: int = eqx.field(static=True, default=1)
    leads: tuple[int, ...] = eqx.field(static=True, default=(), converter=tuple)

    def __check_init__(self):
        if self.window < 1:
            raise ValueError(f"Cycle: window must be >= 1 model steps, got {self.window}")
        if any(k < 0 for k in self.leads) or list(self.leads) != sorted(set(self.leads)):
            raise ValueError(f"Cycle: leads must be increasing steps >= 0, got {self.leads}")

    def forecast(self, x_start) -> jax.Array:
        """Step 2: the background `(W+1, n)`, the forecast from `x_start` over the window."""
        return self.model.rollout(x_start, self.window)

    def assimilate(self, background, obs: ObsWindow) -> tuple[Analysis, ObsWindow]:
        """Step 3: the background check, then the method. **Returns** the analysis and the
        observations it assimilated."""
        if self.check is not None:
            obs = self.check(background, obs)
        return self.method(background, obs), obs

    def judge(self, background, analysis: Analysis, obs: ObsWindow):
        """Step 4: **returns** `(GateReport or None, accepted trajectory, HANDED_ON code)`."""
        report = None if self.gate is None else self.gate(background, analysis, obs)
        accepted, code = _hand_on(background, analysis, obs, report)
        return report, accepted, code

    def product(self, accepted) -> jax.Array:
        """Step 6: the forecast `(L, n)` at the lead steps from the accepted window end."""
        return lead_forecasts(self.model, accepted[-1], self.leads)


def cycle_step(cycle: Cycle, x_start, obs: ObsWindow) -> CycleRecord:
    """One cycle from the state `x_start` at its cycle point with its window's observations
    (`T+1 = window + 1` rows; row 0, the cycle point, belongs to the previous cycle):
    forecast → background check → analysis → gate → hand on → product forecast.
    """
    background = cycle.forecast(x_start)
    analysis, used = cycle.assimilate(background, obs)
    report, accepted, code = cycle.judge(background, analysis, used)
    return CycleRecord(
        background=background,
        analysis=analysis,
        gate=report,
        accepted=accepted,
        handed_on=code,
        obs_mask=used.mask,
        forecast=cycle.product(accepted),
    )


def run_cycles(
    cycle: Cycle, first_background, obs: ObsWindow, n_cycles: int, shift: int | None = None
) -> CycleRecord:
    """`n_cycles` cycles over `obs` (one row per model step), each `cycle_step`.

    Cycle `c` starts `c·shift` model steps in, from what the previous cycle handed on
    `shift` steps into its window (`shift = window`: back-to-back windows; `shift < window`:
    overlapping windows, as DAPPER's 4D-Var slides its lag); row 0 of each window was
    assimilated by the previous cycle and is masked. **Returns** the records batched over
    cycles.
    """
    window = cycle.window
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
    cycle.model.check_state(jnp.asarray(first_background), "first_background")

    def one(x_start, c):
        rows = obs.rows(c * shift, window + 1)
        rows = eqx.tree_at(lambda o: o.mask, rows, rows.mask.at[0].set(False))
        record = cycle_step(cycle, x_start, rows)
        return record.accepted[shift], record

    _, records = jax.lax.scan(one, jnp.asarray(first_background), jnp.arange(n_cycles))
    return records


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
    out: CycleRecord, truth, window: int, shift: int | None = None, spinup: int = 0
) -> dict[str, jax.Array]:
    """Time-mean RMSE against `truth` (one row per model step) at each window's end, over
    the cycles after the first `spinup`: DAPPER's `rmse.a` (`"analysis"`: the accepted
    trajectory, what each cycle handed on and the pipeline stores) and `rmse.f`
    (`"background"`)."""
    n_cycles = out.background.shape[0]
    truth_end = truth[analysis_times(n_cycles, window, shift)][spinup:]
    return {
        "analysis": jnp.mean(rmse_t(out.accepted[spinup:, -1], truth_end)),
        "background": jnp.mean(rmse_t(out.background[spinup:, -1], truth_end)),
    }
