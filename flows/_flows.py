"""The Prefect flows: one cycle, a run of cycles (resume and backfill), and the OSSE.

Parameters are small (a config path, cycle ids, flags); arrays move between the tasks of
a cycle in memory and land in the store. The store is the record of what is done: a run
asks it which cycles are still to do.
"""

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed

import storage
import tasks
import vardax_core as vc

# A progress hook for the CLI's progress bar (not a flow parameter: it is not data).
# Called with (cycles done, cycles to do, last cycle id, its status).
_progress: list[Callable[[int, int, str, str], None]] = []


def set_progress(callback: Callable[[int, int, str, str], None] | None) -> None:
    _progress.clear()
    if callback is not None:
        _progress.append(callback)


def _tick(done: int, total: int, cycle: str, status: str) -> None:
    for callback in _progress:
        callback(done, total, cycle, status)


def _cycle_run_name() -> str:
    p = flow_run.parameters
    return f"{tasks.experiment(p['config']).name}/{p['cycle']}"


def _run_name() -> str:
    p = flow_run.parameters
    exp = tasks.experiment(p["config"])
    kind = "backfill" if p.get("rerun") else "run"
    return f"{exp.name}/{kind} {p.get('start') or 'origin'}…{p.get('end')}"


@flow(name="cycle", flow_run_name=_cycle_run_name, persist_result=False, validate_parameters=False)
def cycle_flow(config: str, cycle: str, cold_start: bool = False) -> str:
    """One cycle: ingest obs → forecast → analyse → gate → forecast product → persist.

    **Returns** the cycle's status; raises `CycleHalted` when the gate fails under `halt`.
    """
    started = time.perf_counter()
    obs = tasks.ingest_obs(config, cycle)
    background = tasks.forecast_background(config, cycle, cold_start)
    analysed = tasks.analyse(config, cycle, background, obs)
    verdict = tasks.gate(config, cycle, background, obs, analysed)
    product = tasks.forecast_product(config, cycle, verdict)
    status = tasks.persist(config, cycle, obs, background, analysed, verdict, product, started)
    if status == "failed":
        raise tasks.CycleHalted(
            f"{tasks.experiment(config).name}: cycle {cycle} failed the gate — {verdict.reason}. "
            "The run stops here; fix the cause (observations, config) and run again."
        )
    if status == "degraded":  # shown as such in the UI: a Completed state named Degraded
        return Completed(name="Degraded", message=verdict.reason, data=status)
    return status


def _segments(indices: list[int], block: int) -> list[tuple[int, int]]:
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


def cycles_to_do(exp, store, start, end, rerun: bool) -> list[int]:
    """Indices of the cycles in `start … end` to run: those not done (committed, degraded,
    skipped), or all of them with `rerun`."""
    todo = store.not_done(start, end)
    if rerun:
        return list(range(exp.axis.index(start), exp.axis.index(end) + 1))
    return [int(i) for i in todo]


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
    log = get_run_logger()
    first = exp.point(start) if start else exp.axis.origin
    last = exp.point(end) if end else first
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    with tasks.open_writer(exp) as store:
        todo = cycles_to_do(exp, store, first, last, rerun)
        already_done = exp.axis.index(last) - exp.axis.index(first) + 1 - len(todo)
        log.info(
            "%s: %d cycles to run from %s to %s (%d already done)",
            exp.name,
            len(todo),
            storage.cycle_id(first),
            storage.cycle_id(last),
            already_done,
        )
        done = 0
        _tick(0, len(todo), "", "")
        progress = _progress_artifact(exp, len(todo))
        with tags(*exp.tags):
            if block > 0:
                for index, n in _segments(todo, block):
                    cold = cold_start and index == todo[0]
                    statuses = tasks.run_block(
                        config, storage.cycle_id(exp.axis.point(index)), n, cold
                    )
                    for s in statuses:
                        counts[s] = counts.get(s, 0) + 1
                    done += n
                    last_id = storage.cycle_id(exp.axis.point(index + n - 1))
                    _tick(done, len(todo), last_id, statuses[-1])
                    progress(done)
            else:
                for index in todo:
                    cycle = storage.cycle_id(exp.axis.point(index))
                    status = cycle_flow(config, cycle, cold_start and index == todo[0])
                    counts[status] = counts.get(status, 0) + 1
                    done += 1
                    _tick(done, len(todo), cycle, status)
                    progress(done)
    wall = time.perf_counter() - t0
    log.info("%s: %s in %.1f s", exp.name, counts, wall)
    if todo:
        run_artifact(exp, todo[0], todo[-1], counts, wall)
    return {"statuses": counts, "cycles": len(todo), "already_done": already_done, "wall_s": wall}


def _progress_artifact(exp, total: int):
    """A progress artifact of the run in the Prefect UI; **returns** `update(done)`."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from tasks._steps import artifact_key

    try:
        artifact_id = create_progress_artifact(
            0.0,
            key=artifact_key(exp, "progress"),
            description=f"{exp.name}: cycles of this run done ({total} to do)",
        )
    except Exception:  # the UI entry is not worth failing a run for
        return lambda done: None

    def update(done: int) -> None:
        try:
            update_progress_artifact(artifact_id, 100.0 * done / max(total, 1))
        except Exception:
            pass

    return update


def run_artifact(exp, first: int, last: int, counts: dict, wall: float) -> None:
    """The run's summary in the Prefect UI: counts, wall time, and a figure of its cycles'
    innovation χ²/dof and increments (a PNG inside the markdown)."""
    import base64

    from prefect.artifacts import create_markdown_artifact

    from tasks._steps import artifact_key

    from ._report import run_figure_png

    try:
        png = base64.b64encode(run_figure_png(exp.store_url, first, last)).decode()
        text = (
            f"## {exp.name}: cycles {storage.cycle_id(exp.axis.point(first))} … "
            f"{storage.cycle_id(exp.axis.point(last))}\n\n"
            + ", ".join(f"**{k}** {v}" for k, v in sorted(counts.items()))
            + f" in {wall:.1f} s; store `{exp.store_url}`.\n\n"
            + f"![cycles](data:image/png;base64,{png})\n"
        )
        create_markdown_artifact(
            text, key=artifact_key(exp, "run-summary"), description=f"{exp.name}: this run"
        )
    except Exception as err:  # the UI entry is not worth failing a run for
        get_run_logger().warning("%s: run artifact not created: %s", exp.name, err)


# --- the OSSE ---------------------------------------------------------------------------


@task(name="write-osse", cache_policy=NO_CACHE, persist_result=False)
def write_osse(config: str, n_cycles: int, seed: int) -> dict:
    """The nature run (truth at every model step, and the first guess) and its synthetic
    observations, written where the experiment reads them."""
    exp = tasks.experiment(config)
    problem = tasks.osse_problem(exp.cfg, n_cycles, seed)
    n_steps = n_cycles * exp.window
    times = exp.model_times(n_steps)
    truth = np.asarray(problem.truth)
    storage.write_nature_run(
        exp.truth_url,
        times,
        truth.reshape(len(truth), *exp.layout.state_shape),
        first_guess=np.asarray(problem.first_background),
        dim=exp.layout.state_dim_names,
        storage_options=exp.storage_options,
    )
    values = np.where(np.asarray(problem.obs.mask), np.asarray(problem.obs.values), np.nan)
    table = storage.observation_table(times, exp.locations, values, exp.cfg.observations.error_std)
    files = []
    opts = exp.cfg.observations.storage_options or None
    if "{cycle_id}" in exp.obs_url:
        # one file per cycle: window times after the cycle point up to its end
        step = pd.Timedelta(seconds=exp.step_seconds)
        for c in range(n_cycles):
            point = exp.axis.point(c)
            rows = table[(table["time"] > point) & (table["time"] <= point + exp.window * step)]
            url = exp.obs_url_for(point)
            storage.write_observation_table(url, rows, storage_options=opts)
            files.append(url)
    else:
        storage.write_observation_table(exp.obs_url, table, storage_options=opts)
        files.append(exp.obs_url)
    return {"truth": exp.truth_url, "observations": files, "n_obs": len(table)}


@flow(
    name="simulate",
    flow_run_name=lambda: f"{tasks.experiment(flow_run.parameters['config']).name}/simulate",
    persist_result=False,
    validate_parameters=False,
)
def simulate_flow(config: str, cycles: int, seed: int = 0) -> dict:
    """An OSSE for the experiment: `cycles` windows of truth and observations."""
    exp = tasks.experiment(config)
    if exp.cfg.observations.source != "synthetic":
        raise ValueError(
            f"{config}: observations.source is {exp.cfg.observations.source!r}; simulate makes "
            "synthetic observations (source: synthetic)"
        )
    with tags(*exp.tags):
        out = write_osse(config, cycles, seed)
    get_run_logger().info(
        "%s: nature run %s, %d observations in %s",
        exp.name,
        out["truth"],
        out["n_obs"],
        ", ".join(out["observations"][:3]) + (" …" if len(out["observations"]) > 3 else ""),
    )
    return out


def reference_scores(config: str, cycles: int, seed: int = 0, spinup: int = 0) -> dict:
    """The pure-JAX loop on the same OSSE as `simulate` (same gate and background check,
    the loop the block task runs): what the pipeline must reproduce. **Returns** the
    time-mean window-end RMSEs (`"analysis"` of the accepted trajectories, `"background"`)
    and the loop's `CycleOutput` (`"output"`)."""
    import equinox as eqx

    exp = tasks.experiment(config)
    problem = tasks.osse_problem(exp.cfg, cycles, seed)
    out = eqx.filter_jit(vc.run_cycles)(
        exp.model,
        exp.method,
        problem.first_background,
        problem.obs,
        cycles,
        exp.window,
        gate=exp.gate,
        check=exp.check,
    )
    scores = vc.cycle_scores(out, problem.truth, exp.window, spinup=spinup)
    return {
        "analysis": float(scores["analysis"]),
        "background": float(scores["background"]),
        "output": out,
    }
