"""The six steps of one cycle as Prefect tasks. Each loads what it needs, calls the named
piece of `vardax_core.cycle_step` it runs, and hands on the result (arrays stay in memory:
results are not persisted, and never reach Prefect's API):

1. `ingest_obs`          — the window's observations, static QC (`_observations`);
2. `forecast_background` — the start state (`_restart`) forecast over the window;
3. `analyse`             — the background check and the method (`Cycle.assimilate`);
4. `gate`                — the gate and what is handed on (`Cycle.judge`), the verdict;
5. `forecast_product`    — the product forecast from the accepted window end (`Cycle.product`);
6. `persist`             — one region write of the cycle, `status` last.

The product forecast runs before `persist`, so a cycle lands in one write whose status is
written last: a crash never leaves a committed cycle without its forecast.
"""

import time
from dataclasses import dataclass

import equinox as eqx
import jax
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

import storage
import vardax_core as vc

from ._log import run_logger
from ._observations import Observations, read_observations
from ._record import Verdict, cycle_fields, verdict
from ._restart import start_state
from ._run import Run

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}
_forecast = eqx.filter_jit(lambda core, x: core.forecast(x))
_assimilate = eqx.filter_jit(
    lambda core, xb, obs, index, whole: core.assimilate(xb, obs, index, whole)
)
_judge = eqx.filter_jit(lambda core, xb, a, obs: core.judge(xb, a, obs))
_product = eqx.filter_jit(
    lambda core, accepted: (core.product(accepted), core.product_spread(accepted))
)


@dataclass
class Background:
    """The state the cycle started from and its forecast over the window (an ensemble's
    `(N, n)` and `(N, W+1, n)`), where the start came from, whether no earlier window
    assimilated into it (`fresh`: every row of the window is new), and the wall time."""

    x_start: np.ndarray
    trajectory: np.ndarray
    source: str
    fresh: bool
    wall_s: float


@dataclass
class Analysed:
    """The analysis (`None`: nothing to assimilate, forecast-only), the mask of the
    observations it assimilated, and its wall time."""

    analysis: vc.Analysis | None
    used_mask: np.ndarray
    wall_s: float


@dataclass
class Judged:
    """The gate's report (`None` for a forecast-only cycle), the trajectory the cycle hands
    on and its `HANDED_ON` code, and the verdict."""

    report: vc.GateReport | None
    accepted: np.ndarray
    handed_on: int
    verdict: Verdict


@task(name="ingest-obs", task_run_name="ingest-obs/{cycle}", **_TASK)
def ingest_obs(run: Run, cycle: storage.CyclePoint) -> Observations:
    """Step 1: the window's observations from the configured source, statically QC'd."""
    obs = read_observations(run.exp, [cycle])[0]
    run_logger().info(
        "%s: %d observations assimilable (%s)", cycle, obs.n_obs, obs.reason or obs.source
    )
    return obs


@task(name="forecast-background", task_run_name="forecast-background/{cycle}", **_TASK)
def forecast_background(run: Run, cycle: storage.CyclePoint, cold: bool = False) -> Background:
    """Step 2: the background over the window, from where the restart policy says (an
    ensemble's members on the run's Dask cluster under `compute.member_forecasts: dask`)."""
    x_start, source, fresh = start_state(run.exp, run.store, cycle, cold)
    t0, pool = time.perf_counter(), run.members()
    if pool is None:
        trajectory = np.asarray(_forecast(run.exp.core, x_start))
    else:
        trajectory, workers = pool.forecast(run.exp.model, x_start, run.exp.window)
        run_logger().info(
            "%s: %d members forecast on %d Dask workers (%s)",
            cycle,
            len(trajectory),
            len(workers),
            ", ".join(workers),
        )
    wall = time.perf_counter() - t0
    return Background(np.asarray(x_start), trajectory, source, fresh, wall)


@task(name="analyse", task_run_name="analyse/{cycle}", **_TASK)
def analyse(run: Run, cycle, background: Background, obs: Observations) -> Analysed:
    """Step 3: the background check, then the method (none without observations)."""
    if obs.n_obs == 0:
        return Analysed(None, obs.mask, 0.0)
    t0 = time.perf_counter()
    traced = (np.int64(cycle.index), np.bool_(background.fresh))  # one compilation for all
    analysis, used = _assimilate(run.exp.core, background.trajectory, obs.window(run.exp), *traced)
    analysis, used_mask = jax.device_get((analysis, used.mask))
    code = int(vc.result_code(analysis.result))
    run_logger().info(
        "%s: %s, cost %.4g → %.4g in %d iterations (result %s)",
        cycle,
        run.exp.cfg.method.label,
        float(analysis.cost_before),
        float(analysis.cost_after),
        int(analysis.iterations),
        vc.result_name(code),
    )
    return Analysed(analysis, used_mask, time.perf_counter() - t0)


@task(name="gate", task_run_name="gate/{cycle}", **_TASK)
def gate(run: Run, cycle, background: Background, obs: Observations, analysed: Analysed) -> Judged:
    """Step 4: may the analysis be used? The verdict, and what the cycle hands on."""
    xb, core = background.trajectory, run.exp.core
    if analysed.analysis is None:
        report, accepted, handed_on = None, xb, vc.HANDED_ON.index("background")
    else:
        used = obs.window(run.exp, analysed.used_mask)
        out = _judge(core, xb, analysed.analysis, used)
        report, accepted, handed_on = jax.device_get(out)
    v = verdict(run.exp, obs, _record(background, analysed, report, accepted, handed_on))
    log = run_logger()
    (log.info if v.status == "committed" else log.warning)("%s: %s %s", cycle, v.status, v.reason)
    return Judged(report, np.asarray(accepted), int(handed_on), v)


@task(name="forecast-product", task_run_name="forecast-product/{cycle}", **_TASK)
def forecast_product(run: Run, cycle, judged: Judged) -> tuple:
    """Step 6 of the cycle: the forecast at the lead steps from the accepted window end
    (an ensemble's mean), and an ensemble's forecast spread by lead (else `None`)."""
    return jax.device_get(_product(run.exp.core, judged.accepted))


@task(name="persist", task_run_name="persist/{cycle}", **_TASK)
def persist(
    run: Run, cycle, obs, background, analysed, judged: Judged, product, started: float
) -> dict:
    """Step 5 of the cycle: one region write of the cycle, `status` last. **Returns** the
    variables written."""
    timings = {
        "wall_time_forecast_s": background.wall_s,
        "wall_time_analysis_s": analysed.wall_s,
        "wall_time_cycle_s": time.perf_counter() - started,
    }
    v = judged.verdict
    record = _record(
        background, analysed, judged.report, judged.accepted, judged.handed_on, product
    )
    data = cycle_fields(run.exp, obs, record, v, timings, background.fresh)
    run.store.write_cycle(cycle.time, run.exp.fields(data), v.status)
    return data


def _record(background, analysed, report, accepted, handed_on, product=None) -> vc.CycleRecord:
    """The cycle's `vardax_core.CycleRecord` from the per-cycle steps' results."""
    n = background.trajectory.shape[-1]
    forecast, spread = (np.zeros((0, n)), None) if product is None else product
    return vc.CycleRecord.of(
        background.trajectory,
        analysed.analysis,
        report,
        np.asarray(accepted),
        np.asarray(handed_on),
        np.asarray(analysed.used_mask),
        forecast,
        spread,
    )
