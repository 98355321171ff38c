"""The Prefect flows: one cycle, a run of cycles (resume and backfill), and the OSSE.

Parameters are small (a config path, cycle ids, flags); arrays move between the tasks of
a cycle in memory and land in the store. The store is the record of what is done: a run
asks it which cycles are still to do.
"""

import time
from collections import Counter
from collections.abc import Callable

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run
from prefect.states import Completed

import configs
import tasks

from . import _artifacts as artifacts

# A progress hook for the CLI's progress bar (not a flow parameter: it is not data).
# Called with (cycles done, cycles to do, last cycle id, its status).
_progress: list[Callable[[int, int, str, str], None]] = []


def set_progress(callback: Callable[[int, int, str, str], None] | None) -> None:
    _progress.clear()
    if callback is not None:
        _progress.append(callback)


def tick(done: int, total: int, cycle: str, status: str) -> None:
    for callback in _progress:
        callback(done, total, cycle, status)


def _cycle_run_name() -> str:
    p = flow_run.parameters
    return f"{tasks.experiment(p['config']).name}/{p['cycle']}"


@flow(name="cycle", flow_run_name=_cycle_run_name, persist_result=False, validate_parameters=False)
def cycle_flow(config: str, cycle: str, cold_start: bool = False, run: tasks.Run | None = None):
    """One cycle: ingest obs → forecast → analyse → gate → forecast product → persist.
    `run`: the run it belongs to (its store open as the writer); without one the cycle
    opens the store itself.

    **Returns** the cycle's status; raises `CycleHalted` when the gate fails under `halt`.
    """
    if run is None:
        with tasks.open_run(tasks.experiment(config)) as own:
            return cycle_flow.fn(config, cycle, cold_start, own)
    started, point = time.perf_counter(), run.exp.cycle(cycle)
    obs = tasks.ingest_obs(run, point)
    background = tasks.forecast_background(run, point, cold_start)
    analysed = tasks.analyse(run, point, background, obs)
    judged = tasks.gate(run, point, background, obs, analysed)
    product = tasks.forecast_product(run, point, judged)
    data = tasks.persist(run, point, obs, background, analysed, judged, product, started)
    status, reason = judged.verdict.status, judged.verdict.reason
    artifacts.cycle_artifacts(run.exp, point, data, status, reason)
    if status == "failed":
        raise tasks.CycleHalted(
            f"{run.exp.name}: cycle {point} failed the gate — {reason}. The run stops here; "
            "fix the cause (observations, config) and run again."
        )
    if status == "degraded":  # shown as such in the UI: a Completed state named Degraded
        return Completed(name="Degraded", message=reason, data=status)
    return status


def segments(indices: list[int], block: int) -> list[tuple[int, int]]:
    """Runs of consecutive cycle indices, cut into pieces of at most `block` that start at
    multiples of `block` where they can (so a re-run after a crash repeats whole blocks)."""
    out = []
    i = 0
    while i < len(indices):
        start = indices[i]
        stop = min((start // block + 1) * block, start + block)
        n = 1
        while i + n < len(indices) and indices[i + n] == start + n and start + n < stop:
            n += 1
        out.append((start, n))
        i += n
    return out


def cycles_to_do(run: tasks.Run, first, last, rerun: bool) -> list[int]:
    """Indices of the cycles `first … last` to run: those not done (committed, degraded,
    skipped), or all of them with `rerun`."""
    todo = run.store.not_done(first.time, last.time)
    return list(range(first.index, last.index + 1)) if rerun else [int(i) for i in todo]


def _run_name() -> str:
    p = flow_run.parameters
    kind = "backfill" if p.get("rerun") else "run"
    return (
        f"{tasks.experiment(p['config']).name}/{kind} {p.get('start') or 'origin'}…{p.get('end')}"
    )


def _without_heartbeats():
    """Prefect settings for the `cycle` flow runs inside a run: no heartbeat thread. A
    cycle's run lasts about a second, and its heartbeat thread, joined at its end after
    sleeping in one-second steps, would add up to a second more; the enclosing run's own
    heartbeat still tells the server that the process lives."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def run_cycles(
    run: tasks.Run, todo: list[int], block: int = 0, cold_start: bool = False, progress=None
) -> dict[str, str]:
    """Runs the cycles `todo` in order, in blocks or one `cycle` flow run each
    (`progress(done)` after each piece); **returns** each cycle's id → its status."""
    with _without_heartbeats():
        return _run_pieces(run, todo, block, cold_start, progress or (lambda done: None))


def _run_pieces(run: tasks.Run, todo: list[int], block: int, cold_start: bool, progress):
    statuses: dict[str, str] = {}
    pieces = segments(todo, block) if block > 0 else [(i, 1) for i in todo]
    for index, n in pieces:
        cycle, cold = run.exp.axis.cycle(index), cold_start and index == todo[0]
        if block > 0:
            written = tasks.run_block(run, cycle, n, cold)
        else:
            written = [cycle_flow(run.exp.config_path, cycle.id, cold, run)]
        ids = [run.exp.axis.cycle(index + k).id for k in range(n)]
        statuses |= dict(zip(ids, written, strict=True))
        tick(len(statuses), len(todo), ids[-1], written[-1])
        progress(len(statuses))
    return statuses


@flow(name="cycling", flow_run_name=_run_name, persist_result=False, validate_parameters=False)
def cycling_flow(
    config: str,
    start: str | None = None,
    end: str | None = None,
    rerun: bool = False,
    block: int = 0,
    cold_start: bool = False,
) -> dict:
    """The cycles `start … end` (ids or ISO times; `start` defaults to the origin), in order.

    Resumes by itself: cycles the store holds as done are skipped and each cycle starts from
    the previous cycle's analysis in the store. `rerun` recomputes done cycles too (a
    reflow). `block > 0` runs consecutive cycles `block` at a time in one pure-JAX loop
    (one task and one region write per block); else one `cycle` flow run per cycle.

    **Returns** counts of the statuses written and the wall time.
    """
    exp = tasks.experiment(config)
    exp.require_method()  # a learned method without its checkpoint: say so before starting
    if block and exp.cfg.compute.member_forecasts == "dask":
        raise configs.ConfigError(
            f"{exp.config_path}: compute.member_forecasts: dask forecasts the members cycle "
            f"by cycle, and block mode (block {block}) scans whole cycles in one compiled "
            "loop: run without a block, or with member_forecasts: vmap"
        )
    first = exp.cycle(start) if start else exp.axis.cycle(0)
    last = exp.cycle(end) if end else first
    t0, log = time.perf_counter(), get_run_logger()
    with tasks.open_run(exp) as run:
        todo = cycles_to_do(run, first, last, rerun)
        if todo and not cold_start:  # the past it continues from was computed from these obs
            tasks.check_lineage(run, todo[0])
        already = last.index - first.index + 1 - len(todo)
        log.info("%s: %d cycles to run, %d already done", exp.name, len(todo), already)
        tick(0, len(todo), "", "")
        progress = artifacts.progress_artifact(exp, len(todo))
        with tags(*exp.tags):
            statuses = run_cycles(run, todo, block, cold_start, progress)
    counts = dict(Counter(statuses.values()))
    wall = time.perf_counter() - t0
    log.info("%s: %s in %.1f s", exp.name, counts, wall)
    if todo:
        _run_summary(exp, todo, counts, wall)
    return {"statuses": counts, "cycles": len(todo), "already_done": already, "wall_s": wall}


def _run_summary(exp, todo: list[int], counts: dict, wall: float) -> None:
    """The run's summary artifact, with a figure of its cycles when there are several (a
    one-cycle run, as a scheduled one often is, has its cycle's own artifacts)."""
    figure = None
    if len(todo) > 1:
        from ._report import run_figure_png  # matplotlib only when there is a figure to draw

        figure = run_figure_png(exp.store_url, todo[0], todo[-1], exp.storage_options)
    first, last = exp.axis.cycle(todo[0]), exp.axis.cycle(todo[-1])
    artifacts.run_summary(exp, first, last, counts, wall, figure)


# --- the OSSE ---------------------------------------------------------------------------


def _simulate_name() -> str:
    return f"{tasks.experiment(flow_run.parameters['config']).name}/simulate"


@flow(
    name="simulate", flow_run_name=_simulate_name, persist_result=False, validate_parameters=False
)
def simulate_flow(config: str, cycles: int, seed: int = 0, force: bool = False) -> dict:
    """An OSSE for the experiment: `cycles` windows of truth and observations. Refuses to
    replace the OSSE of a store with cycles done against it, unless `force`."""
    exp = tasks.experiment(config)
    if not exp.cfg.observations.simulated:
        raise configs.ConfigError(
            f"{config}: observations.source is {exp.cfg.observations.source!r}; simulate makes "
            "synthetic observations (source: synthetic)"
        )
    if not force:
        tasks.refuse_replacing(exp, cycles)
    with tags(*exp.tags):
        out = tasks.write_osse(exp, cycles, seed)
    files = out["observations"]
    get_run_logger().info(
        "%s: nature run %s, %d observations in %s",
        exp.name,
        out["truth"],
        out["n_obs"],
        ", ".join(files[:3]) + (" …" if len(files) > 3 else ""),
    )
    return out
