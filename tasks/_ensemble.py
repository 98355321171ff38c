"""An ensemble of forecasts from a cycle's analysis, one task per member (on Dask workers,
which resolve the experiment from its config path once per process)."""

import jax
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

import storage
import vardax_core as vc

from ._experiment import experiment
from ._restart import forecast
from ._run import open_store


def ensemble_initial(exp, cycle: storage.CyclePoint, members: int, std: float, seed: int):
    """`(members, n)` states around the analysis at the end of `cycle`'s window (a done
    cycle): member 0 is the analysis itself, the others add the model's perturbations."""
    with open_store(exp, writable=False) as store:
        x = np.reshape(store.read_cycle(cycle.time)["analysis"][-1], -1)
    key = jax.random.PRNGKey(seed)
    return np.asarray(vc.perturbed_ensemble(exp.model, x, key, members, std))


@task(name="ensemble-member", cache_policy=NO_CACHE, persist_result=False)
def forecast_member(config: str, initial: np.ndarray, steps: int) -> np.ndarray:
    """One member's forecast `(steps + 1, n)`."""
    return np.asarray(forecast(experiment(config).model, initial, steps))


def write_ensemble(exp, cycle: storage.CyclePoint, trajectories, leads, std: float) -> str:
    """`ensemble-<cycle>.zarr` beside the store: the members at `leads`, their mean and
    spread. **Returns** its URL."""
    members = len(trajectories)
    url = storage.sibling_url(exp.store_url, f"ensemble-{cycle}.zarr")
    storage.write_ensemble(
        url,
        np.asarray(trajectories).reshape(members, len(leads), *exp.layout.state_shape),
        valid_from=cycle.time + np.timedelta64(exp.layout.window_offsets_s[-1], "s"),
        lead_seconds=[k * exp.step_seconds for k in leads],
        dims=exp.layout.state_dim_names,
        attrs={"experiment": exp.name, "cycle": cycle.id, "spread": std},
        storage_options=exp.storage_options,
    )
    return url
