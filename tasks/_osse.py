"""The OSSE of an experiment: a nature run from its model and synthetic observations on its
observation layout, written where the experiment reads them."""

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

import storage
import vardax_core as vc
from configs import registry


def osse_problem(exp, n_cycles: int, seed: int = 0) -> vc.CycledProblem:
    """Truth and observations for `n_cycles` windows (`seed` draws both)."""
    return registry.osse_problem(exp.build, exp.observing, n_cycles, seed)


@task(name="write-osse", cache_policy=NO_CACHE, persist_result=False)
def write_osse(exp, n_cycles: int, seed: int) -> dict:
    """The nature run (truth at every model step, and the first guess) and its synthetic
    observations (one file, or one per cycle for a `{cycle_id}` template)."""
    problem = osse_problem(exp, n_cycles, seed)
    times = exp.model_times(n_cycles * exp.window)
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
    o = exp.cfg.observations
    table = storage.observation_table(times, exp.observing.locations, values, o.error_std)
    opts = exp.obs_storage_options
    if "{cycle_id}" not in exp.obs_url:
        storage.write_observation_table(exp.obs_url, table, storage_options=opts)
        return {"truth": exp.truth_url, "observations": [exp.obs_url], "n_obs": len(table)}
    files = []
    for c in range(n_cycles):  # a cycle's file: its window's times after the cycle point
        cycle = exp.axis.cycle(c)
        end = cycle.time + exp.axis.interval
        rows = table[(table["time"] > cycle.time) & (table["time"] <= end)]
        storage.write_observation_table(exp.obs_url_for(cycle), rows, storage_options=opts)
        files.append(exp.obs_url_for(cycle))
    return {"truth": exp.truth_url, "observations": files, "n_obs": len(table)}
