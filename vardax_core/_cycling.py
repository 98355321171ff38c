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
from ._ensemble import cycle_key, newest_rows
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
    """`(trajectory, HANDED_ON code)` of what the cycle hands on (for an ensemble
    `background` `(N, W+1, n)`, the analysis or the background ensemble)."""
    has_obs = jnp.any(obs.mask)
    use = has_obs if report is None else has_obs & report.passed
    analysed = analysis.trajectory if analysis.ensemble is None else analysis.ensemble
    out = jnp.where(use, analysed, background)
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
      For an ensemble method these are the ensemble means.
    - `gate`: the gate's `GateReport` (`None` for a cycle without a gate).
    - `obs_mask`: `(W+1, m)` the observations assimilated (after the background check).
    - `forecast`: `(L, n)` the product forecast at the lead steps after the window end
      (from the accepted ensemble's mean).
    - `background_ensemble`, `accepted_ensemble`: `(N, W+1, n)` the members (ensemble
      methods; else `None`).
    - `forecast_spread`: `(L,)` the accepted members' forecast spread at the lead steps
      (standard deviation over members, mean over the state; ensemble methods).
    """

    background: jax.Array
    analysis: Analysis
    gate: GateReport | None
    accepted: jax.Array
    handed_on: jax.Array
    obs_mask: jax.Array
    forecast: jax.Array
    background_ensemble: jax.Array | None = None
    accepted_ensemble: jax.Array | None = None
    forecast_spread: jax.Array | None = None

    @classmethod
    def of(cls, background, analysis, gate, accepted, handed_on, obs_mask, forecast, spread=None):
        """The record of a cycle's pieces; an ensemble's `background` and `accepted`
        `(N, W+1, n)` are kept as members and summarised by their means."""
        if jnp.ndim(background) == 3:
            mean = lambda a: jnp.mean(a, axis=0)  # noqa: E731
            return cls(
                mean(background),
                analysis,
                gate,
                mean(accepted),
                handed_on,
                obs_mask,
                forecast,
                background,
                accepted,
                spread,
            )
        return cls(background, analysis, gate, accepted, handed_on, obs_mask, forecast)


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
    - `shift`: model steps from one cycle to the next (`None`: the window — back-to-back
      windows); fewer overlaps the windows, each cycle handing on its accepted state
      `shift` steps into its window (`hand_on`, `run_cycles`).
    - `seed`: keys the random numbers of an ensemble method, with the cycle's index
      (`cycle_key`).

    For an ensemble method (`method.ensemble`) the state a cycle starts from and hands on
    is the ensemble `(N, n)`: each member is forecast (one `vmap` over the model), the
    background check and the product forecast use the ensemble mean.
    """

    model: AbstractForwardModel
    method: AbstractAnalysisMethod
    gate: Gate | None = None
    check: BackgroundCheck | None = None
    window: int = eqx.field(static=True, default=1)
    leads: tuple[int, ...] = eqx.field(static=True, default=(), converter=tuple)
    seed: int = eqx.field(static=True, default=0)
    shift: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.window < 1:
            raise ValueError(f"Cycle: window must be >= 1 model steps, got {self.window}")
        if self.shift is not None and not 1 <= self.shift <= self.window:
            raise ValueError(
                f"Cycle: need 1 <= shift <= window, got shift={self.shift}, window={self.window}"
            )
        if any(k < 0 for k in self.leads) or list(self.leads) != sorted(set(self.leads)):
            raise ValueError(f"Cycle: leads must be increasing steps >= 0, got {self.leads}")

    @property
    def ensemble(self) -> bool:
        return self.method.ensemble

    @property
    def new_rows(self) -> int | None:
        """How many of a window's last rows its method assimilates (a method of `new_rows`:
        a window sliding by that many steps); `None`: all of them."""
        return getattr(self.method, "new_rows", None)

    @property
    def steps_per_cycle(self) -> int:
        """Model steps from one cycle point to the next: `shift`, else the window."""
        return self.window if self.shift is None else self.shift

    def forecast(self, x_start) -> jax.Array:
        """Step 2: the background `(W+1, n)`, the forecast from `x_start` over the window
        (an ensemble's `(N, W+1, n)`, each member's)."""
        if self.ensemble:
            return jax.vmap(lambda x: self.model.rollout(x, self.window))(x_start)
        return self.model.rollout(x_start, self.window)

    def assimilate(
        self, background, obs: ObsWindow, index=0, whole=False
    ) -> tuple[Analysis, ObsWindow]:
        """Step 3: the background check, then the method (an ensemble method with the
        random key of cycle `index`). **Returns** the analysis and the observations it
        assimilated: a method that takes only a sliding window's `new_rows`, those —
        unless `whole` (traceable): the cycle starts from a state no earlier window
        assimilated into (a cold start, or one carried across skipped cycles), so every
        row of its window is new."""
        if self.check is not None:
            mean = jnp.mean(background, axis=0) if self.ensemble else background
            obs = self.check(mean, obs)
        obs = newest_rows(obs, self.new_rows, whole)
        if self.ensemble:
            return self.method(background, obs, cycle_key(self.seed, index, 1)), obs
        return self.method(background, obs), obs

    def judge(self, background, analysis: Analysis, obs: ObsWindow):
        """Step 4: **returns** `(GateReport or None, accepted trajectory, HANDED_ON code)`."""
        report = None if self.gate is None else self.gate(background, analysis, obs)
        accepted, code = _hand_on(background, analysis, obs, report)
        return report, accepted, code

    def product(self, accepted) -> jax.Array:
        """Step 6: the forecast `(L, n)` at the lead steps from the accepted window end (an
        ensemble's mean)."""
        end = jnp.mean(accepted[:, -1], axis=0) if self.ensemble else accepted[-1]
        return lead_forecasts(self.model, end, self.leads)

    def product_spread(self, accepted) -> jax.Array | None:
        """An ensemble's forecast spread `(L,)` at the lead steps: each accepted member
        forecast from the window end (`None` for a single state)."""
        if not self.ensemble:
            return None
        members = jax.vmap(lambda x: lead_forecasts(self.model, x, self.leads))(accepted[:, -1])
        return jnp.mean(jnp.std(members, axis=0, ddof=1), axis=-1)

    def hand_on(self, accepted, shift: int | None = None) -> jax.Array:
        """The state the next cycle starts from, `shift` (default `steps_per_cycle`) steps
        into the accepted window (an ensemble's members)."""
        shift = self.steps_per_cycle if shift is None else shift
        return accepted[:, shift] if self.ensemble else accepted[shift]


def cycle_step(cycle: Cycle, x_start, obs: ObsWindow, index=0, whole=False) -> CycleRecord:
    """One cycle from the state `x_start` (an ensemble's `(N, n)`) at its cycle point with
    its window's observations (`T+1 = window + 1` rows; row 0, the cycle point, belongs to
    the previous cycle): forecast → background check → analysis → gate → hand on →
    product forecast. `index` is the cycle's index on its axis (it keys an ensemble
    method's random numbers); `whole`: every row of the window is new (`Cycle.assimilate`).
    """
    background = cycle.forecast(x_start)
    analysis, used = cycle.assimilate(background, obs, index, whole)
    report, accepted, code = cycle.judge(background, analysis, used)
    return CycleRecord.of(
        background,
        analysis,
        report,
        accepted,
        code,
        used.mask,
        cycle.product(accepted),
        cycle.product_spread(accepted),
    )


def run_cycles(
    cycle: Cycle,
    first_background,
    obs: ObsWindow,
    n_cycles: int,
    shift: int | None = None,
    first_index=0,
    fresh=True,
) -> CycleRecord:
    """`n_cycles` cycles over `obs` (one row per model step), each `cycle_step`.

    Cycle `c` starts `c·shift` model steps in, from what the previous cycle handed on
    `shift` steps into its window (`shift` defaults to the cycle's `steps_per_cycle`;
    `shift = window`: back-to-back windows; `shift < window`: overlapping windows, as
    DAPPER's 4D-Var slides its lag); row 0 of each window was assimilated by the previous
    cycle and is masked. `first_background` is an ensemble `(N, n)` for an ensemble method;
    `first_index` the index of the first cycle; `fresh` (traceable): no earlier window
    assimilated into `first_background` (a cold start), so the first window's rows are
    all new to a method of `new_rows` (false: it continues a run). **Returns** the records
    batched over cycles.
    """
    window = cycle.window
    if shift is not None and cycle.shift is not None and shift != cycle.shift:
        raise ValueError(f"run_cycles: shift={shift}, but the cycle's shift is {cycle.shift}")
    shift = cycle.steps_per_cycle if shift is None else shift
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
    first = jnp.asarray(first_background)
    if cycle.ensemble and (first.ndim != 2 or first.shape[0] != cycle.method.members):
        raise ValueError(
            f"run_cycles: first_background of an ensemble method must be (members, n) = "
            f"({cycle.method.members}, {cycle.model.state_size}), got {tuple(first.shape)}"
        )
    cycle.model.check_state(first[0] if cycle.ensemble else first, "first_background")

    def one(x_start, c):
        rows = obs.rows(c * shift, window + 1)
        rows = eqx.tree_at(lambda o: o.mask, rows, rows.mask.at[0].set(False))
        record = cycle_step(cycle, x_start, rows, first_index + c, fresh & (c == 0))
        accepted = record.accepted if record.accepted_ensemble is None else record.accepted_ensemble
        return cycle.hand_on(accepted, shift), record

    _, records = jax.lax.scan(one, first, jnp.arange(n_cycles))
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
