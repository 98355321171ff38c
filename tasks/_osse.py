"""The OSSE of an experiment: a nature run from its model and synthetic observations on its
observation layout, written where the experiment reads them."""

import hashlib
import uuid

import numpy as np
import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

import storage
import vardax_core as vc
from configs import registry


def osse_problem(exp, n_cycles: int, seed: int = 0) -> vc.CycledProblem:
    """Truth and observations for `n_cycles` windows (`seed` draws both)."""
    return registry.osse_problem(exp.build, exp.observing, n_cycles, seed)


def osse_hash(identity_text: str) -> str:
    """What an OSSE depends on, hashed: a store's identity (`configs.identity_text`, its
    `config_text`) without the method, the experiment's name and QC (the members of a sweep
    share one OSSE). A nature run records it (`osse_hash`), a report compares it."""
    data = yaml.safe_load(identity_text or "") or {}
    kept = {k: v for k, v in data.items() if k not in ("method", "experiment")}
    if isinstance(kept.get("observations"), dict):
        kept["observations"] = {k: v for k, v in kept["observations"].items() if k != "qc"}
    return hashlib.sha256(yaml.safe_dump(kept, sort_keys=True).encode()).hexdigest()


def refuse_replacing(exp, n_cycles: int) -> None:
    """Raises `storage.ObservationError` (exit code 2) when the experiment's store holds
    cycles already done: a new OSSE would replace the truth and observations they were
    computed from. Reads the store only; no store, nothing to refuse."""
    try:
        store = storage.CycleStore.open(exp.store_url, storage_options=exp.storage_options)
    except storage.StoreNotFoundError:
        return
    done = len(store.committed_cycles())
    if done:
        raise storage.ObservationError(
            f"store {exp.store_url} holds {done} cycles done against the OSSE beside it "
            f"({exp.truth_url}, {exp.obs_url}): a new one would replace their truth and "
            f"observations. `vardax-cycle simulate {exp.config_path} --cycles {n_cycles} "
            "--force` replaces it (then rerun the cycles with `backfill --rerun`), or point "
            "store.url elsewhere"
        )


def osse_cycles(exp) -> int:
    """How many cycles the experiment's OSSE (its nature run) covers; 0 without one."""
    try:
        truth = storage.read_nature_run(exp.truth_url, storage_options=exp.storage_options)
    except storage.ObservationError:
        return 0
    return exp.cfg.cycling.cycles_covered(truth.sizes["time"] - 1)


@task(name="write-osse", cache_policy=NO_CACHE, persist_result=False)
def write_osse(exp, n_cycles: int, seed: int) -> dict:
    """The nature run (truth at every model step, and the first guess) and its synthetic
    observations (one file, or one per cycle for a `{cycle_id}` template). The nature run
    records a new `osse_id`, what it was made for (`osse_hash`, `experiment`) and how
    (`osse_cycles`, `osse_seed`)."""
    problem = osse_problem(exp, n_cycles, seed)
    times = exp.model_times(exp.osse_steps(n_cycles))
    truth = np.asarray(problem.truth)
    osse_id = uuid.uuid4().hex
    storage.write_nature_run(
        exp.truth_url,
        times,
        truth.reshape(len(truth), *exp.layout.state_shape),
        first_guess=np.asarray(problem.first_background),
        dim=exp.layout.state_dim_names,
        storage_options=exp.storage_options,
        attrs={
            "osse_id": osse_id,
            "osse_hash": osse_hash(exp.identity),
            "experiment": exp.name,
            "osse_cycles": int(n_cycles),
            "osse_seed": int(seed),
        },
    )
    values = np.where(np.asarray(problem.obs.mask), np.asarray(problem.obs.values), np.nan)
    o = exp.cfg.observations
    table = storage.observation_table(times, exp.observing.locations, values, o.error_std)
    opts = exp.obs_storage_options
    if "{cycle_id}" not in exp.obs_url:
        storage.write_observation_table(exp.obs_url, table, storage_options=opts)
        return {
            "truth": exp.truth_url,
            "observations": [exp.obs_url],
            "n_obs": len(table),
            "osse_id": osse_id,
        }
    files = []
    for c in range(n_cycles):  # a cycle's file: its window's times after the cycle point
        cycle = exp.axis.cycle(c)
        end = cycle.time + exp.window_span
        rows = table[(table["time"] > cycle.time) & (table["time"] <= end)]
        storage.write_observation_table(exp.obs_url_for(cycle), rows, storage_options=opts)
        files.append(exp.obs_url_for(cycle))
    return {"truth": exp.truth_url, "observations": files, "n_obs": len(table), "osse_id": osse_id}
