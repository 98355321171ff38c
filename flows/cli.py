"""The `vardax-cycle` command line (typer + rich).

`simulate`, `run`, `backfill`, `demo`, `train`, `sweep` and `ensemble` run the Prefect flows
(on Prefect's embedded server unless `PREFECT_API_URL` names a real one); `serve` and
`deploy` schedule them on a real server (in this process, or for workers of a pool); `status`,
`report`, `validate`, `info` read. Every error ends in one message naming the file, key,
cycle or store at fault, and an exit code a script can act on (`EXIT_CODES`); Prefect's
logs and Python's tracebacks only with `-v`.
"""

import functools
import importlib.metadata as md
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._runtime import configure_prefect, server_environment

EXIT_CODES = {
    0: "done",
    1: "halted by the gate",
    2: "bad input (config, observations, store, command-line arguments)",
    3: "the store is locked by another writer",
    4: "storage failure (unreadable, unwritable, corrupt)",
    5: "internal error",
}
_LABELS = {1: "halted", 2: "bad input", 3: "locked", 4: "storage failure", 5: "internal error"}

app = typer.Typer(
    help="vardax-cycle: cycling data assimilation on JAX, Prefect and Zarr. Exit codes: "
    + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items())
    + ".",
    no_args_is_help=True,
)
console = Console()
_verbose = [False]

_PACKAGES = (
    "vardax-cycle",
    "jax",
    "jaxlib",
    "equinox",
    "diffrax",
    "optimistix",
    "lineax",
    "optax",
    "prefect",
    "xarray",
    "zarr",
    "dask",
    "fsspec",
    "pydantic",
    "typer",
)


class CommandError(Exception):
    """A command that cannot run as asked (exit code 2)."""

    exit_code = 2


def exit_code(err: BaseException) -> int:
    """The exit code of an error: its own (`exit_code`), else 2 for a training that went
    non-finite (a learning rate to lower), 130 for an interrupt, 5 for anything else."""
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, FloatingPointError):
        return 2
    return int(getattr(err, "exit_code", 5))


def command(fn):
    """A command whose errors end in one line and their exit code."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BaseException as err:
            code = exit_code(err)
            if _verbose[0]:
                console.print_exception(show_locals=False)
            what = _LABELS.get(code, "interrupted")
            hint = " (run with -v for the traceback)" if code == 5 and not _verbose[0] else ""
            message = str(err) or type(err).__name__
            line = f"[red]{what}[/red]: {escape(message)}{hint}"
            console.print(line, highlight=False, soft_wrap=True)
            raise typer.Exit(code=code) from None

    return app.command()(run)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Prefect's logs and tracebacks on the console")
    ] = False,
) -> None:
    """Cycling data assimilation: a pure-JAX core run by Prefect into Zarr stores."""
    # before Prefect is imported (the commands import it lazily): it reads these then
    _verbose[0] = verbose
    configure_prefect(verbose)


_Config = Annotated[Path, typer.Argument(help="experiment YAML file")]


def _experiment(config: Path):
    import tasks

    return tasks.experiment(config)  # which sets the numerical runtime first


def _server_note() -> None:
    url = os.environ.get("PREFECT_API_URL")
    if url:
        console.print(f"Prefect API: {url}")
    else:
        console.print(
            "Prefect API: embedded server (starts in ~15–25 s here; set PREFECT_API_URL to use "
            "a running server and its UI)"
        )


def _progress_bar():
    """The commands' rich progress bar: description, bar, done/total, the last event."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _run_cycles(exp, first, last, *, rerun=False, block=0, cold_start=False) -> dict:
    """Runs the cycling flow with a progress bar; a range the store holds as done already
    is reported without starting Prefect."""
    import time

    import tasks

    t0 = time.perf_counter()
    exp.require_method()  # a learned method without its checkpoint: say so, start nothing
    done = None if rerun else tasks.all_done(exp, exp.cycle(first), exp.cycle(last))
    if done is not None:
        wall = time.perf_counter() - t0
        return {"statuses": {}, "cycles": 0, "already_done": done, "wall_s": wall}
    from prefect import tags

    from flows import _flows

    _server_note()
    progress = _progress_bar()
    bar = progress.add_task(f"{exp.name}", total=None, last="starting Prefect…")

    def tick(done, total, cycle, status):
        progress.update(bar, completed=done, total=total, last=f"{cycle} {status}")

    _flows.set_progress(tick)
    try:
        with progress, tags(*exp.tags):
            return _flows.cycling_flow(
                exp.config_path, first, last, rerun=rerun, block=block, cold_start=cold_start
            )
    finally:
        _flows.set_progress(None)


def _range(exp, start, end, cycles) -> tuple[str, str]:
    """The first and last cycle ids of `start … end` (or `cycles` cycles from `start`)."""
    first = exp.cycle(start) if start else exp.axis.cycle(0)
    last = exp.cycle(end) if end is not None else exp.axis.cycle(first.index + cycles - 1)
    if last.index < first.index:
        raise CommandError(f"--end {last} is before the first cycle {first}")
    return first.id, last.id


def _summary(exp, out: dict) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(out["statuses"].items())) or "nothing to do"
    console.print(
        f"{exp.name}: ran {out['cycles']} cycles ({counts}; {out['already_done']} already done) "
        f"in {out['wall_s']:.1f} s — store {exp.store_url}"
    )


@command
def simulate(
    config: _Config,
    cycles: Annotated[int, typer.Option(min=1, help="cycles of truth and observations")] = 40,
    seed: Annotated[int, typer.Option(help="seed of the nature run and the noise")] = 0,
    force: Annotated[
        bool, typer.Option(help="replace the OSSE even of a store with cycles done against it")
    ] = False,
) -> None:
    """An OSSE: the nature run and synthetic observations for CYCLES cycles (from the origin),
    written beside the store (truth.zarr, observations file). Refuses (exit code 2) to replace
    the OSSE of a store that holds cycles done against it, unless --force."""
    import tasks
    from flows import _flows

    exp = _experiment(config)
    if not force:  # before Prefect starts
        tasks.refuse_replacing(exp, cycles)
    _server_note()
    out = _flows.simulate_flow(exp.config_path, cycles, seed, force)
    files = out["observations"]
    console.print(
        f"{exp.name}: nature run {out['truth']}; {out['n_obs']} observations in "
        f"{', '.join(files[:2])}{' …' if len(files) > 2 else ''}"
    )


@command
def train(config: _Config) -> None:
    """Trains the config's learned method (fourdvarnet, amortized) on windows simulated from
    its model and observation layout, checks it on held-out windows against strong 4DVar's
    posterior (and the amortized posterior's calibration), and writes the checkpoint beside
    the store; `run` then loads it."""
    from flows import _train

    exp = _experiment(config)
    _server_note()
    progress = _progress_bar()
    bar = progress.add_task(f"{exp.name} train", total=None, last="starting Prefect…")

    def tick(row):
        val = row.get("val_loss")
        last = f"loss {row['loss']:.4g}" + (f", validation {val:.4g}" if val is not None else "")
        progress.update(bar, completed=row["step"], total=row["total"], last=last)

    _train.set_progress(tick)
    try:
        with progress:
            out = _train.train_flow(exp.config_path)
    finally:
        _train.set_progress(None)
    table = Table(title=f"{exp.name}: {exp.cfg.method.label} on held-out windows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in out.items():
        if key not in ("history", "checkpoint"):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"checkpoint: {out['checkpoint']}")


@command
def run(
    config: _Config,
    cycles: Annotated[int, typer.Option(min=1, help="cycles from START (without --end)")] = 40,
    start: Annotated[str | None, typer.Option(help="first cycle point (default: origin)")] = None,
    end: Annotated[str | None, typer.Option(help="last cycle point (overrides --cycles)")] = None,
    block: Annotated[
        int, typer.Option(min=0, help="cycles per block task in one pure-JAX loop (0: per cycle)")
    ] = 0,
    cold_start: Annotated[
        bool, typer.Option(help="start the first cycle to run from the cold-start state")
    ] = False,
) -> None:
    """Runs the cycles START … END; resumes by itself: cycles the store holds as done are
    skipped, and each cycle starts from the previous analysis in the store."""
    exp = _experiment(config)
    first, last = _range(exp, start, end, cycles)
    _summary(exp, _run_cycles(exp, first, last, block=block, cold_start=cold_start))


@command
def backfill(
    config: _Config,
    start: Annotated[str, typer.Option(help="first cycle point of the period")],
    end: Annotated[str, typer.Option(help="last cycle point of the period")],
    rerun: Annotated[
        bool, typer.Option(help="recompute cycles that are already done (a reflow)")
    ] = False,
    block: Annotated[
        int, typer.Option(min=0, help="cycles per block task in one pure-JAX loop (0: per cycle)")
    ] = 0,
    cold_start: Annotated[bool, typer.Option(help="start cold at START")] = False,
) -> None:
    """Fills the cycles of a past period that are not done (gaps), or with --rerun
    recomputes all of them; done cycles outside the period are not touched."""
    exp = _experiment(config)
    first, last = _range(exp, start, end, 1)
    _summary(exp, _run_cycles(exp, first, last, rerun=rerun, block=block, cold_start=cold_start))


@command
def serve(config: _Config) -> None:
    """Serves a Prefect deployment of the scheduled cycling flow: one run per cycle point
    (the config's interval from the end of the first window, or `operations.cron`), each processing
    every due cycle with the catch-up policy; one run at a time. Needs a running server
    (`vardax-cycle server`) named by PREFECT_API_URL. Stopped while a cycle runs, that
    run keeps the deployment's one slot until the server's lease on it expires
    (PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION, 300 s by default); the
    cycle was not committed, so the next scheduled run redoes it."""
    from flows import _operations

    exp = _experiment(config)
    if not os.environ.get("PREFECT_API_URL"):
        raise CommandError(
            "serve needs a running Prefect server (schedules do not run on the embedded one): "
            "start it with `vardax-cycle server` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    console.print(
        f"serving {exp.name}: cycles every {exp.cfg.cycling.interval} (catch-up "
        f"{exp.cfg.operations.catch_up}); Ctrl-C stops"
    )
    _operations.serve(config)


@command
def deploy(
    config: _Config,
    pool: Annotated[str, typer.Option(help="the Prefect work pool (created if missing)")],
    pool_type: Annotated[
        str, typer.Option(help="the type of a pool created here (Prefect's worker types)")
    ] = "process",
    working_dir: Annotated[
        Path | None,
        typer.Option(
            help="where a process worker runs the cycles (default: this directory); the "
            "config's own paths are relative to its folder"
        ),
    ] = None,
    heartbeat: Annotated[
        int, typer.Option(min=30, help="seconds between a run's heartbeats (Prefect's minimum: 30)")
    ] = 30,
    crash_after: Annotated[
        float,
        typer.Option(
            help="seconds without a heartbeat after which a run is marked crashed, freeing the "
            "deployment's slot for the next scheduled run (a killed worker's run)"
        ),
    ] = 90.0,
) -> None:
    """Registers the experiment's scheduled deployment (the schedule, catch-up policy and
    one run at a time of `serve`) in a Prefect work pool; `prefect worker start --pool
    POOL` on any machine with the project installed and the config at the same path runs
    its cycles. Several hosts need a store they all reach (an fsspec URL such as s3://…).
    Needs a running server named by PREFECT_API_URL."""
    from flows import _operations

    exp = _experiment(config)
    if crash_after <= heartbeat:
        raise CommandError(
            f"--crash-after ({crash_after:g} s) must exceed --heartbeat ({heartbeat} s)"
        )
    if not os.environ.get("PREFECT_API_URL"):
        raise CommandError(
            "deploy needs a running Prefect server (the workers reach it): start it with "
            "`vardax-cycle server` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    out = _operations.deploy(
        config,
        pool,
        pool_type=pool_type,
        working_dir=working_dir,
        heartbeat_s=heartbeat,
        crash_after_s=crash_after,
    )
    console.print(
        f"deployed {out['deployment']} ({out['id']}) to the {out['pool_type']} pool "
        f"{out['pool']!r}: cycles every {exp.cfg.cycling.interval} into {exp.store_url}; a run "
        f"silent for {crash_after:g} s is marked crashed. "
        f"Start workers with: prefect worker start --pool {out['pool']}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def server(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 4200,
) -> None:
    """Starts a real local Prefect server (SQLite, UI on the same port) bound to 127.0.0.1,
    telemetry off, task runs recorded in batches (SQLite's write collisions otherwise stall
    a cycle by 2 s), the UI pointed at this port's API; runs until stopped."""
    import shutil
    import sys

    exe = shutil.which("prefect") or str(Path(sys.executable).parent / "prefect")
    console.print(
        f"Prefect server on http://127.0.0.1:{port} — set PREFECT_API_URL=http://127.0.0.1:{port}/api"
    )
    os.execvpe(
        exe,
        [exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_environment()
        | {
            # the UI asks this URL for the API; by default it names port 4200 whatever --port is
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        },
    )


@command
def demo(
    config: _Config = Path("configs/l96-4dvar.yaml"),
    cycles: Annotated[int, typer.Option(min=1)] = 40,
) -> None:
    """The main job: simulate an OSSE, run CYCLES cycles (resuming a partial run), write the
    report, and print where the store and the plots are. A partial run keeps its OSSE when
    that covers CYCLES (a longer one would replace what its cycles were computed from:
    refused, exit code 2)."""
    import tasks
    from flows import _flows
    from flows._report import write_report

    exp = _experiment(config)
    if tasks.osse_cycles(exp) < cycles:
        if exp.cfg.observations.simulated:  # before Prefect starts
            tasks.refuse_replacing(exp, cycles)
        _flows.simulate_flow(exp.config_path, cycles, 0)
    first, last = _range(exp, None, None, cycles)
    _summary(exp, _run_cycles(exp, first, last))
    report_dir = Path(os.path.dirname(exp.store_url)) / "report"
    summary = write_report(exp.store_url, report_dir, truth_url=exp.truth_url)
    console.print(f"store:  {exp.store_url}  (xarray.open_zarr reads it)")
    console.print(
        f"report: {summary} and {', '.join(sorted(p.name for p in report_dir.glob('*.png')))}"
    )
    console.print(summary.read_text(), markup=False)


@command
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="sweep YAML file (base, members, dask)")],
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="address of a running dask scheduler (default: the file's, or a LocalCluster)"
        ),
    ] = None,
) -> None:
    """Runs several experiments over the same observations in parallel on a Dask cluster
    (Prefect's Dask task runner): the shared OSSE once, then each member's cycles as a
    Dask task into its own store; prints a table of the members' scores."""
    import configs
    from flows import _distributed

    spec, _ = configs.load_sweep(sweep_file)
    _server_note()
    where = scheduler or spec.dask.address or f"a LocalCluster of {spec.dask.n_workers} workers"
    console.print(f"sweep {spec.sweep}: {len(spec.members)} members on {where}")
    results = _distributed.run_sweep(str(sweep_file), scheduler)
    table = Table(title=f"sweep {spec.sweep}: {spec.cycles} cycles")
    for col in ("experiment", "method", "statuses", "analysis RMSE", "background RMSE", "wall s"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r["experiment"],
            r["method"],
            ", ".join(f"{k} {v}" for k, v in r["statuses"].items()) or "nothing to do",
            f"{r['rmse_analysis']:.4f}" if "rmse_analysis" in r else "—",
            f"{r['rmse_background']:.4f}" if "rmse_background" in r else "—",
            f"{r['wall_s']:.1f}",
        )
    console.print(table)


@command
def ensemble(
    config: _Config,
    cycle: Annotated[str, typer.Option(help="the analysis to start from (a done cycle)")],
    members: Annotated[int, typer.Option(min=1)] = 8,
    spread: Annotated[
        float | None, typer.Option(help="perturbation std (default: qc.background_std)")
    ] = None,
    seed: int = 0,
    scheduler: Annotated[
        str | None, typer.Option(help="address of a running dask scheduler")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="LocalCluster workers")] = 2,
) -> None:
    """An ensemble of forecasts from a cycle's analysis, one Dask task per member; written
    as ensemble-<cycle>.zarr (forecast, mean, spread) beside the store."""
    import tasks
    from flows import _distributed

    exp = _experiment(config)
    point = exp.cycle(cycle)
    status = tasks.open_store(exp, writable=False).status_of(point.time)
    if status not in ("committed", "degraded"):
        raise CommandError(f"cycle {point} is {status}: an ensemble starts from a done cycle")
    _server_note()
    url = _distributed.run_ensemble(
        exp.config_path, point.id, members, spread, seed, scheduler, workers
    )
    console.print(f"ensemble: {url}  (xarray.open_zarr reads it)")


@command
def info() -> None:
    """Versions of the stack, the devices JAX sees and the installed plugins (models,
    operators and methods that packages register)."""
    import jax

    table = Table(title="vardax-cycle installation")
    table.add_column("package")
    table.add_column("version")
    for name in _PACKAGES:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = "[red]not installed[/red]"
        table.add_row(name, version)
    console.print(table)
    devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    console.print(f"JAX devices: {devices}")
    from configs import ENTRY_POINT_GROUPS, installed_plugins

    for kind, group in ENTRY_POINT_GROUPS.items():
        console.print(f"plugins ({group}): {', '.join(installed_plugins(kind)) or 'none'}")


@command
def validate(config: Annotated[Path, typer.Argument(help="experiment YAML file")]) -> None:
    """Checks an experiment config as `run` would (its model, observation layout,
    covariances, method and gate built; an existing store made for it), touching nothing;
    prints what it sets up, or the problem with its key."""
    import storage

    exp = _experiment(config)
    cfg = exp.cfg
    try:
        exp.require_method()
        method = type(exp.core.method).__name__
    except storage.CheckpointError as err:
        method = f"{cfg.method.label} (not trained yet: {err})"
    import tasks

    store = tasks.checked_store(exp)  # read-only, as `run` opens it
    held = "new" if store is None else f"{len(store.committed_cycles())} cycles done"
    dask = cfg.compute.dask
    where = (
        ""
        if cfg.compute.member_forecasts != "dask"
        else f", members forecast on Dask ({dask.address or f'a LocalCluster of {dask.n_workers}'})"
    )
    console.print(
        f"[green]valid[/green]: {cfg.experiment} — {cfg.model.label} (state "
        f"{exp.model.state_size}), {cfg.method.label} = {method}{where}, cycles from "
        f"{cfg.cycling.origin} every {cfg.cycling.interval}, store {cfg.store.url} ({held})"
    )


@command
def status(
    store: Annotated[str, typer.Argument(help="store path or fsspec URL")],
    last: Annotated[int, typer.Option(help="show the last N cycle slots that are not empty")] = 20,
) -> None:
    """The store's cycles and their states (a reader: needs no lock)."""
    import storage

    s = storage.CycleStore.open(store)
    table = s.status_table()
    used = (table["status"] != "empty").to_numpy().nonzero()[0]
    table = table.iloc[: used[-1] + 1 if len(used) else 0]  # not the unused slots of the last block
    counts = table["status"].value_counts()
    shown = table[table["status"] != "empty"].tail(last)
    out = Table(
        title=f"{s.attrs.get('experiment') or store}: "
        + ", ".join(f"{n} {int(counts.get(n, 0))}" for n in storage.STATUS if counts.get(n, 0))
    )
    for col in ("cycle", "status", "cost_after", "iterations", "innovation_chi2_dof", "reason"):
        out.add_column(col)
    colour = {"committed": "green", "degraded": "yellow", "failed": "red", "skipped": "blue"}
    for _, row in shown.iterrows():
        name = str(row["status"])
        out.add_row(
            row["cycle_id"],
            f"[{colour.get(name, 'white')}]{name}[/]",
            f"{row['cost_after']:.4g}",
            str(row["iterations"]),
            f"{row['innovation_chi2_dof']:.3g}",
            str(row.get("status_reason", "")),
        )
    console.print(out)
    nxt = s.first_not_committed(s.axis.point(0), s.axis.point(max(s.n_slots - 1, 0)))
    console.print(
        f"first cycle still to run: {storage.iso(nxt) if nxt is not None else 'none in the store'}"
    )


@command
def report(
    store: Annotated[str, typer.Argument(help="store path or fsspec URL")],
    out: Annotated[Path, typer.Option(help="folder for the PNGs and summary.md")] = Path(
        "runs/report"
    ),
    truth: Annotated[
        str | None, typer.Option(help="the OSSE nature run (Zarr), to score against")
    ] = None,
) -> None:
    """PNG plots (RMSE(t), Hovmöller, innovation statistics) and a markdown summary."""
    from flows._report import write_report

    summary = write_report(store, out, truth_url=truth)
    console.print(f"report: {summary} (and the PNGs beside it)")


@command
def verify(store: Annotated[str, typer.Argument(help="store path or fsspec URL")]) -> None:
    """Reads every written cycle of the store and checks each variable against the checksum
    written at its commit; lists each cycle and variable that is unreadable or does not
    match (exit code 4), or says all match (0). A reader: needs no lock."""
    import storage

    s = storage.CycleStore.open(store)
    progress = _progress_bar()
    bar = progress.add_task("verify", total=s.n_slots, last="")
    with progress:
        result = s.verify(lambda done, total: progress.update(bar, completed=done, total=total))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if result.problems:
        table = Table(title=f"{store}: {len(result.problems)} problems")
        for col in ("cycle", "variable", "problem"):
            table.add_column(col)
        for cycle, name, what in result.problems:
            table.add_row(cycle, name, what)
        console.print(table)
        console.print(
            "[red]storage failure[/red]: recompute each damaged cycle with `vardax-cycle "
            "backfill CONFIG --start CYCLE --end CYCLE --rerun`",
            highlight=False,
        )
        raise typer.Exit(code=4)
    console.print(
        f"[green]ok[/green]: {result.cycles} written cycles, {result.variables} variables read, "
        f"{result.summed} checksums match — {store}",
        highlight=False,
    )


@command
def unlock(
    store: Annotated[str, typer.Argument(help="store path or fsspec URL")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Breaks the store's writer lock, left by a writer that is gone (killed, or its host
    lost). Shows the holder and asks first; refuses a holder that still runs on this host
    (exit code 3). A cycle that writer left half-written is redone (or, for a rerun,
    completed) by the next run."""
    import storage

    holder, damaged = storage.CycleStore.lock_info(store)
    if holder is None and damaged is None:
        console.print(f"{store} is not locked")
        return
    if holder is not None and holder.holder_is_alive_here():
        raise storage.StoreLockedError(
            f"store {store} is locked by a writer that still runs on this host "
            f"({holder.describe()}): stop it instead"
        )
    what = f"is locked by {holder.describe()}" if holder is not None else f"lock: {damaged}"
    console.print(f"{store} {what}", highlight=False, soft_wrap=True)
    if not yes and not typer.confirm("Break the lock? (only if that writer is gone)"):
        console.print("the lock is left as it was")
        raise typer.Exit(code=3)
    storage.CycleStore.break_lock(store)
    console.print(f"lock of {store} broken", highlight=False)
