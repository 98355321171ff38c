"""Helpers of the pipeline tests: configs under a test's folder, stores compared."""

from pathlib import Path

import numpy as np
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[1]


def experiment_config(tmp_path, shipped: str, filename=None, **changes) -> "Path":
    """A shipped config with its store under `tmp_path` and `changes` applied to its keys
    (`{"gates.policy": "halt"}` style, as keyword `gates__policy="halt"`). **Returns** the
    path of the new YAML file."""
    root = ROOT / "configs"
    data = yaml.safe_load((root / f"{shipped}.yaml").read_text())
    data["store"]["url"] = str(tmp_path / "store.zarr")
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / (filename or f"{shipped}.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


TIMINGS = ("wall_time_forecast_s", "wall_time_analysis_s", "wall_time_cycle_s")
# the checksums sum the timings too: the other variables are compared instead
UNCOMPARED = (*TIMINGS, "checksum")


def store_arrays(url, n_cycles: int, storage_options=None) -> dict[str, np.ndarray]:
    """Every variable of the first `n_cycles` cycles of a store, timings left out."""
    ds = xr.open_zarr(str(url), storage_options=storage_options).isel(cycle=slice(0, n_cycles))
    return {name: ds[name].values for name in ds.data_vars if name not in UNCOMPARED}


def window_end_rmse(store_url, truth_url, n_cycles: int, spinup: int = 0) -> float:
    """Time-mean analysis RMSE at the window ends of cycles `spinup:n_cycles` of a store."""
    import tasks

    return tasks.store_scores(store_url, truth_url, spinup, n_cycles)["analysis"]


def run_cycle_by_cycle_and_in_blocks(root, shipped: str, n_cycles: int, block: int, **changes):
    """One OSSE of `shipped` (with `changes`) run through the cycling flow twice: cycle by
    cycle into `root/store.zarr` and in blocks of `block` into `root/block.zarr`.
    **Returns** (config, block config, per-cycle flow output, block flow output)."""
    import storage
    import tasks
    from flows import _flows

    per_cycle = experiment_config(root, shipped, **changes)
    blocked = experiment_config(
        root, shipped, "block.yaml", store__url=str(root / "block.zarr"), **changes
    )
    _flows.simulate_flow(str(per_cycle), n_cycles, 0)
    last = storage.cycle_id(tasks.experiment(per_cycle).axis.point(n_cycles - 1))
    out_cycle = _flows.cycling_flow(str(per_cycle), end=last)
    out_block = _flows.cycling_flow(str(blocked), end=last, block=block)
    return per_cycle, blocked, out_cycle, out_block
