"""Flows whose independent work runs in parallel on a Dask cluster, through Prefect's
Dask task runner (prefect-dask): a sweep (several experiments over the same
observations) and an ensemble of forecasts.

The cluster is a `dask.distributed` LocalCluster by default, or any running scheduler
named by address (`dask.address` of a sweep file, `--scheduler` of the CLI). Each Dask
task is a Prefect task run, visible in the UI under its flow run.
"""

import time
from pathlib import Path

import numpy as np
import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

import configs
import tasks

from . import _flows


def dask_runner(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1):
    """Prefect's Dask task runner on the scheduler at `address`, or on a new LocalCluster
    of `n_workers` processes."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "processes": True,
            "dashboard_address": ":0",
            # import the project once at worker start: task messages unpickled on two
            # threads at once would otherwise race through the same imports
            "preload": ["flows._distributed"],
        }
    )


# --- the sweep --------------------------------------------------------------------------


def write_member_configs(sweep_path) -> tuple[configs.SweepConfig, dict[str, str]]:
    """Writes each member's experiment config into the sweep's folder (where its store, and
    the shared OSSE, live). **Returns** the sweep and `member → config path`."""
    sweep, members = configs.load_sweep(sweep_path)
    folder = Path(sweep.folder)
    if "://" not in sweep.folder:
        folder.mkdir(parents=True, exist_ok=True)
        where = folder
    else:  # member configs stay local, beside the sweep file; their stores live at the URL
        where = Path(sweep_path).parent / sweep.sweep
        where.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in members.items():
        path = where / f"{name}.yaml"
        text = yaml.safe_dump(data, sort_keys=False)
        if not path.exists() or path.read_text() != text:  # unchanged files keep their cache
            path.write_text(text)
        paths[name] = str(path)
    return sweep, paths


@task(name="sweep-member", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def run_member(config: str, end: str, block: int) -> dict:
    """One member of a sweep, on a Dask worker: its cycles in block mode into its store
    (resuming whatever is done), then its scores against the shared OSSE."""
    started = time.perf_counter()
    out = _flows.cycling_flow(config, end=end, block=block)
    exp = tasks.experiment(config)
    scores = {}
    if exp.cfg.observations.simulated:  # an OSSE: scored against its truth
        stop = exp.cycle(end).index + 1
        scores = tasks.store_scores(exp.store_url, exp.truth_url, 0, stop, exp.storage_options)
    return {
        "experiment": exp.name,
        "method": exp.cfg.method.label,
        "store": exp.store_url,
        "statuses": out["statuses"],
        **{f"rmse_{k}": v for k, v in scores.items()},
        "wall_s": time.perf_counter() - started,
    }


def _sweep_name() -> str:
    return f"sweep/{Path(flow_run.parameters['sweep_file']).stem}"


@flow(name="sweep", flow_run_name=_sweep_name, persist_result=False, validate_parameters=False)
def sweep_flow(sweep_file: str) -> list[dict]:
    """A sweep: simulates the shared OSSE once (for a synthetic base), then runs every
    member's cycles as a Dask task; **returns** one summary per member, in file order.
    Run it with `run_sweep` (which picks the task runner from the sweep file)."""
    sweep, paths = write_member_configs(sweep_file)
    first = tasks.experiment(next(iter(paths.values())))
    if first.cfg.observations.simulated:
        truth = Path(first.truth_url)
        if "://" in first.truth_url or not truth.exists():
            tasks.write_osse(first, sweep.cycles, sweep.seed)
    end = first.axis.cycle(sweep.cycles - 1).id
    futures = [run_member.submit(p, end, sweep.block) for p in paths.values()]
    results = [f.result() for f in futures]
    logger = get_run_logger()
    for r in results:
        logger.info(
            "%s (%s): %s, analysis RMSE %s",
            r["experiment"],
            r["method"],
            r["statuses"],
            f"{r['rmse_analysis']:.4f}" if "rmse_analysis" in r else "n/a",
        )
    return results


def run_sweep(sweep_file: str, address: str | None = None) -> list[dict]:
    """Runs a sweep file on its Dask cluster (`address` overrides the file's)."""
    sweep, _ = configs.load_sweep(sweep_file)
    runner = dask_runner(
        address or sweep.dask.address, sweep.dask.n_workers, sweep.dask.threads_per_worker
    )
    return sweep_flow.with_options(task_runner=runner)(str(sweep_file))


# --- the ensemble -----------------------------------------------------------------------


def _ensemble_name() -> str:
    p = flow_run.parameters
    return f"{tasks.experiment(p['config']).name}/ensemble {p['cycle']}"


@flow(
    name="ensemble", flow_run_name=_ensemble_name, persist_result=False, validate_parameters=False
)
def ensemble_flow(
    config: str, cycle: str, members: int = 8, spread: float | None = None, seed: int = 0
) -> str:
    """An ensemble of forecasts from the analysis of `cycle` (committed or degraded): member
    0 from the analysis itself, the others from it plus `spread`-sized perturbations
    (default: the background-check σ_b of the config), each over the config's lead steps,
    as Dask tasks. Writes `ensemble-<cycle>.zarr` beside the store; **returns** its URL.
    Run it with `run_ensemble`."""
    exp = tasks.experiment(config)
    point = exp.cycle(cycle)
    std = exp.cfg.observations.qc.background_std if spread is None else spread
    initial = tasks.ensemble_initial(exp, point, members, std, seed)
    leads = list(exp.cfg.cycling.lead_steps) or [exp.window]
    futures = [tasks.forecast_member.submit(config, x, max(leads)) for x in initial]
    trajectories = np.stack([f.result() for f in futures])[:, leads]
    url = tasks.write_ensemble(exp, point, trajectories, leads, std)
    get_run_logger().info("%s: %d-member ensemble from %s in %s", exp.name, members, cycle, url)
    return url


def run_ensemble(
    config: str,
    cycle: str,
    members: int = 8,
    spread=None,
    seed: int = 0,
    address: str | None = None,
    n_workers: int = 2,
) -> str:
    """Runs `ensemble_flow` on a Dask cluster (a LocalCluster of `n_workers` unless
    `address` names a scheduler)."""
    runner = dask_runner(address, n_workers)
    return ensemble_flow.with_options(task_runner=runner)(config, cycle, members, spread, seed)
