"""Products written beside a cycle store: ensembles of forecasts."""

import posixpath

import numpy as np
import pandas as pd
import xarray as xr

from ._store import quiet_consolidation


def sibling_url(url: str, name: str) -> str:
    """`name` in the folder (or bucket prefix) of `url`."""
    return posixpath.join(posixpath.dirname(str(url).rstrip("/")), name)


def write_ensemble(
    url,
    forecasts,
    *,
    valid_from,
    lead_seconds,
    dims,
    attrs=None,
    storage_options=None,
) -> None:
    """An ensemble of forecasts `(member, lead_time, …state)` as a Zarr dataset with
    `forecast`, the ensemble `mean` and `spread` (standard deviation over members) and
    the valid `time` of each lead; rewritten whole (a product, not a ledger)."""
    forecasts = np.asarray(forecasts)
    dims = tuple(dims)
    if forecasts.ndim != 2 + len(dims):
        raise ValueError(
            f"write_ensemble: forecasts of shape {forecasts.shape} do not match "
            f"(member, lead_time, {', '.join(dims)})"
        )
    lead = pd.to_timedelta(np.asarray(lead_seconds), unit="s")
    full = ("member", "lead_time", *dims)
    ds = xr.Dataset(
        {
            "forecast": (full, forecasts),
            "mean": (full[1:], forecasts.mean(axis=0)),
            "spread": (
                full[1:],
                forecasts.std(axis=0, ddof=1)
                if len(forecasts) > 1
                else np.zeros(forecasts.shape[1:]),
            ),
        },
        coords={
            "member": np.arange(forecasts.shape[0]),
            "lead_time": lead,
            "time": ("lead_time", (pd.Timestamp(valid_from) + lead).to_numpy()),
        }
        | {d: np.arange(s) for d, s in zip(dims, forecasts.shape[2:], strict=True)},
        attrs={"title": "vardax-cycle ensemble forecast", **(attrs or {})},
    )
    ds["spread"].attrs = {"long_name": "ensemble standard deviation over members"}
    with quiet_consolidation():
        ds.to_zarr(
            str(url),
            mode="w",
            zarr_format=3,
            consolidated=True,
            encoding={
                "time": {"units": "seconds since 1970-01-01", "dtype": "int64"},
                "lead_time": {"units": "seconds", "dtype": "int64"},
            },
            storage_options=storage_options or None,
        )
