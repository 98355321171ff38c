"""Views of a store for its readers (reports, scores): the states at each window end next
to the truth at the same times, as plain arrays."""

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ._obs import read_nature_run


@dataclass(frozen=True)
class WindowEnds:
    """Per cycle, the states at the window end (where an analysis is scored).

    - `cycles`, `valid`: the cycle points and the window-end times (datetime64).
    - `analysis`, `background`: `(C, *state)`; `truth`: the same from the nature run (NaN
      where it does not reach), or None without one.
    - `state_dims`: the state's dimension names; `obs_points`: `(m, 2)` `(y, x)` of a
      field's observations (None for a vector state); `obs_seen_last`: `(m,)` which of them
      the last cycle assimilated.
    """

    cycles: np.ndarray
    valid: np.ndarray
    analysis: np.ndarray
    background: np.ndarray
    truth: np.ndarray | None
    state_dims: tuple[str, ...]
    obs_points: np.ndarray | None
    obs_seen_last: np.ndarray


def read_window_ends(store_url, cycles=None, *, truth_url=None, storage_options=None) -> WindowEnds:
    """The window ends of the cycles with indices `cycles` (a slice or index array; all
    slots by default) of the store at `store_url`, and of the truth when given."""
    ds = xr.open_zarr(str(store_url), storage_options=storage_options or None)
    if cycles is not None:
        ds = ds.isel(cycle=cycles)
    end = ds.isel(window_time=-1)
    valid = ds.cycle.values + ds.window_time.values[-1]
    truth = None
    if truth_url is not None:
        nature = read_nature_run(truth_url, storage_options=storage_options)
        truth = nature.reindex(time=valid).values
    points = None
    if "obs_x" in ds.coords:  # a fixed network: its points
        points = np.stack([ds.obs_y.values, ds.obs_x.values], axis=1)
    elif "obs_x" in ds and ds.sizes["cycle"]:  # positions: the last cycle's, at its last time
        last = ds.isel(cycle=-1)
        observed = last.obs_mask.values.any(axis=-1).nonzero()[0]
        row = int(observed[-1]) if len(observed) else -1
        points = np.stack([last.obs_y.values[row], last.obs_x.values[row]], axis=1)
    seen = ds.obs_mask.isel(cycle=-1).values.any(axis=0) if ds.sizes["cycle"] else np.zeros(0)
    return WindowEnds(
        cycles=ds.cycle.values,
        valid=valid,
        analysis=end.analysis.values,
        background=end.background.values,
        truth=truth,
        state_dims=tuple(ds.analysis.dims[2:]),
        obs_points=points,
        obs_seen_last=seen,
    )
