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


def store_arrays(url, n_cycles: int) -> dict[str, np.ndarray]:
    """Every variable of the first `n_cycles` cycles of a store, timings left out."""
    ds = xr.open_zarr(str(url)).isel(cycle=slice(0, n_cycles))
    return {name: ds[name].values for name in ds.data_vars if name not in TIMINGS}


def window_end_rmse(store_url, truth_url, n_cycles: int, spinup: int = 0) -> float:
    """Time-mean analysis RMSE at the window ends of cycles `spinup:n_cycles` of a store."""
    from flows._report import store_scores

    return store_scores(store_url, truth_url, spinup, n_cycles)["analysis"]
