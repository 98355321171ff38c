"""Observation sources: one documented schema, readers for CSV, Parquet, Zarr and NetCDF at a
path or fsspec URL, quality control, and the OSSE writer (nature run + observations).

## The observation schema

A long table, one row per observation (after JEDI's IODA and DART's obs_seq):

| column | meaning |
|---|---|
| `time` | valid time, ISO 8601 UTC (`2026-01-01T06:00Z`) or a datetime (CF-decoded in Zarr/NetCDF) |
| `value` | the observed value |
| `error_std` | the observation's error standard deviation (> 0); optional when the reader is given a default |
| `location` | the observed component (an integer index: a state component, or an output of the observation operator) |
| *or* one column per model dimension | the observation's position in the model's coordinates (`site` on a ring, `y` and `x` on a grid), for observations at positions |
| `qc` | optional: the provider's flag; a row whose `qc` is not 0 is not assimilated (flagged `flagged`) |
| `obs_id`, `platform` | optional: kept in the table, not used |

CSV and Parquet hold the table as columns. Zarr and NetCDF hold either the same
variables along one dimension, or `value` and `error_std` on a `(time, location)` grid with
NaN where nothing was observed.
"""

import functools
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import xarray as xr

from ._cycles import iso, parse_time
from ._errors import ObservationError
from ._layout import QC
from ._store import content_hash, quiet_consolidation

COLUMNS = ("time", "location", "value", "error_std")
"""The columns of observations at state components (what the OSSE writer writes)."""
OPTIONAL = ("qc", "obs_id", "platform")
FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".zarr": "zarr",
    ".nc": "netcdf",
    ".nc4": "netcdf",
}


def _format(url: str, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ObservationError(
                f"unknown observation format {fmt!r}; one of {sorted(set(FORMATS.values()))}"
            )
        return fmt
    suffix = Path(url.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise ObservationError(
            f"cannot tell the format of {url} from its suffix {suffix!r}: name it .csv, .parquet, "
            ".zarr or .nc, or give format="
        )
    return FORMATS[suffix]


def _exists(url: str, storage_options: dict | None) -> bool:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs.exists(path)


def file_size(url, storage_options: dict | None = None) -> int | None:
    """Size in bytes of a file (or the total of a Zarr directory) at a path or fsspec URL;
    None when there is nothing there yet."""
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    try:
        if fs.isdir(path):
            return int(sum(fs.du(path, total=False).values()))
        return int(fs.size(path))
    except FileNotFoundError:
        return None


def read_observation_table(
    url,
    *,
    format: str | None = None,
    storage_options: dict | None = None,
    positions: tuple[str, ...] = (),
    default_error_std: float | None = None,
) -> pd.DataFrame:
    """The whole observation file as the schema's table (`time` as UTC datetime64).

    `positions`: the observations carry their positions in these columns (the model's
    dimensions) instead of a `location`. `default_error_std`: the error of every row when
    the file has no `error_std` column (else the column is required).

    Raises `ObservationError` naming the file for a missing file, a missing column or
    variable, times that are not datetimes, non-integer locations or non-numeric values.
    """
    url = str(url)
    fmt = _format(url, format)
    if not _exists(url, storage_options):
        raise ObservationError(f"observation file not found: {url}")
    try:
        if fmt == "csv":
            table = pd.read_csv(url, storage_options=storage_options)
        elif fmt == "parquet":
            table = pd.read_parquet(url, storage_options=storage_options)
        else:
            table = _table_from_xarray(url, fmt, storage_options)
    except ObservationError:
        raise
    except Exception as err:  # a corrupt or unreadable file: name it
        raise ObservationError(f"cannot read observation file {url} as {fmt}: {err}") from err
    if "variable" in table.columns:  # never assimilated as if they were one variable
        raise ObservationError(
            f"observation file {url} has a 'variable' column: observations of several "
            "variables of a state are not supported (each location or position is one "
            "component of the state); drop the column or split the file"
        )
    if "error_std" not in table.columns and default_error_std is not None:
        table = table.assign(error_std=float(default_error_std))
    where = list(positions) or ["location"]
    columns = ["time", *where, "value", "error_std"]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ObservationError(
            f"observation file {url} lacks column(s) {missing}; it has {list(table.columns)} "
            f"(the schema: {columns}, optionally {list(OPTIONAL)})"
        )
    table = table[columns + [c for c in OPTIONAL if c in table.columns]].copy()
    table["time"] = _as_utc_times(table["time"], url)
    for column in ["value", "error_std", *positions]:
        table[column] = _numbers(table[column], url, column)
    with np.errstate(invalid="ignore"):
        bad = (table["error_std"] <= 0).to_numpy()
    if bad.any():  # not a missing observation (NaN, which QC flags): a wrong one
        row = int(np.flatnonzero(bad)[0])
        raise ObservationError(
            f"observation file {url}: column 'error_std' holds {float(table['error_std'].iloc[row])} "
            f"in row {row + 1} ({int(bad.sum())} rows ≤ 0): an observation's error standard "
            "deviation must be > 0"
        )
    if "qc" in table.columns:
        table["qc"] = _numbers(table["qc"], url, "qc").fillna(0)
    if not positions and not np.issubdtype(table["location"].dtype, np.integer):
        loc = pd.to_numeric(table["location"], errors="coerce")
        if loc.isna().any() or (loc % 1 != 0).any():
            raise ObservationError(
                f"observation file {url}: column 'location' must hold integer component indices"
            )
        table["location"] = loc.astype("int64")
    return table


def _numbers(column: pd.Series, url: str, name: str) -> pd.Series:
    """A numeric column (empty cells NaN, which QC flags); text that is not a number is an
    error naming the file, the column and the first bad row."""
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna() & column.notna() & (column.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ObservationError(
            f"observation file {url}: column {name!r} holds {column.iloc[row]!r} in row "
            f"{row + 1}, not a number"
        )
    return numbers.astype("float64")


@functools.lru_cache(maxsize=8)
def _read_once(url: str, format, options_key: str, stamp, positions, default_error_std):
    del stamp  # part of the cache key only
    options = json.loads(options_key)
    return read_observation_table(
        url,
        format=format,
        storage_options=options,
        positions=positions,
        default_error_std=default_error_std,
    )


def cached_observation_table(
    url, *, format=None, storage_options=None, positions=(), default_error_std=None
) -> pd.DataFrame:
    """`read_observation_table`, read once per version (modification time and size) of a
    local file; a remote one each time (its version is not known without reading it)."""
    url = str(url)
    options = json.dumps(storage_options or {}, sort_keys=True)  # hashable, nested too
    stamp = None
    if "://" not in url or url.startswith("file://"):
        try:
            st = os.stat(url.removeprefix("file://"))
        except FileNotFoundError:
            raise ObservationError(f"observation file not found: {url}") from None
        stamp = (st.st_mtime_ns, st.st_size)
    else:
        _read_once.cache_clear()
    return _read_once(url, format, options, stamp, tuple(positions), default_error_std)


def _table_from_xarray(url, fmt, storage_options):
    if fmt == "zarr":
        ds = xr.open_zarr(url, storage_options=storage_options or None, consolidated=False)
    else:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            ds = xr.open_dataset(io.BytesIO(f.read()), engine="h5netcdf").load()
    if "value" not in ds.variables:
        raise ObservationError(
            f"observation file {url} lacks the variable 'value'; it has "
            f"{sorted(map(str, ds.variables))}"
        )
    if ds["value"].dims == ("time", "location"):
        table = ds[[v for v in ("value", "error_std") if v in ds]].to_dataframe().reset_index()
        return table[np.isfinite(table["value"])]
    return ds.to_dataframe().reset_index(drop=True)


def _as_utc_times(column: pd.Series, url: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        times = pd.to_datetime(column, utc=True)
    elif column.dtype == object or pd.api.types.is_string_dtype(column):
        try:
            times = pd.to_datetime(column, utc=True, format="ISO8601")
        except (ValueError, TypeError) as err:
            raise ObservationError(
                f"observation file {url}: column 'time' is not ISO 8601 times: {err}"
            ) from err
    else:
        raise ObservationError(
            f"observation file {url}: column 'time' holds {column.dtype} numbers, not times — give "
            "ISO 8601 times (CSV, Parquet) or CF-encoded times with units 'seconds since …' "
            "(Zarr, NetCDF)"
        )
    return times.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")


@dataclass(frozen=True)
class WindowObservations:
    """A cycle's observations laid out for the observation operator: `(W, m)` arrays for the
    `W` window times and the `m` observed locations. `n_obs == 0` is the explicit
    "no observations" result."""

    values: np.ndarray
    error_std: np.ndarray
    mask: np.ndarray
    source: str
    content_hash: str
    positions: np.ndarray | None = None
    """`(W, m, d)` each observation's position (model coordinates; NaN in empty slots), for
    observations at positions."""
    flagged: np.ndarray | None = None
    """`(W, m)` where the provider's `qc` column flagged the observation."""

    @property
    def n_obs(self) -> int:
        return int(self.mask.sum())

    @property
    def empty(self) -> bool:
        return self.n_obs == 0


def _matches(table: pd.DataFrame, cycle_points, window_offsets_s, source: str):
    """The rows of `table` valid at the window times of the cycles: `(n, W, rows, cells,
    where)` with `rows[k]` a row (of `table`) valid at the flat `(cycle, window time)` index
    `cells[k]` (a row at a shared window end matches twice)."""
    points = pd.DatetimeIndex([parse_time(p) for p in np.atleast_1d(cycle_points)])
    offsets = np.asarray(window_offsets_s, dtype="int64")
    n, W = len(points), len(offsets)
    seconds = points.to_numpy().astype("datetime64[s]").astype("int64")
    grid = (seconds[:, None] + offsets[None, :]).ravel()  # (n·W,) window times in seconds
    order = np.argsort(grid, kind="stable")
    sorted_grid = grid[order]
    where = f"{source or 'observations'}, cycles {iso(points[0])}…{iso(points[-1])}"
    row_s = table["time"].to_numpy().astype("datetime64[s]").astype("int64")
    inside = np.flatnonzero((row_s >= sorted_grid[0]) & (row_s <= sorted_grid[-1]))
    lo = np.searchsorted(sorted_grid, row_s[inside], "left")
    hi = np.searchsorted(sorted_grid, row_s[inside], "right")
    if (hi == lo).any():
        off = pd.Timestamp(row_s[inside][hi == lo][0], unit="s")
        raise ObservationError(
            f"{where}: observation at {iso(off)} falls between the window times "
            f"(offsets {offsets.tolist()} s from each cycle point)"
        )
    count = hi - lo
    rows = np.repeat(inside, count)
    starts = np.repeat(lo, count)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)
    return n, W, rows, order[starts + within], where


def _window_arrays(table, n, W, m, rows, cells, slots, positions=()):
    """`(values, error_std, mask, positions, flagged)` of `n` windows `(W, m)` with row
    `rows[k]` of `table` at window cell `cells[k]`, slot `slots[k]`."""
    flat = cells * m + slots
    values, error_std = np.full((n, W, m), np.nan), np.full((n, W, m), np.nan)
    mask = np.zeros((n, W, m), bool)
    values.reshape(-1)[flat] = table["value"].to_numpy(dtype="float64")[rows]
    error_std.reshape(-1)[flat] = table["error_std"].to_numpy(dtype="float64")[rows]
    mask.reshape(-1)[flat] = True
    where = None
    if positions:
        where = np.full((n, W, m, len(positions)), np.nan)
        coords = table[list(positions)].to_numpy(dtype="float64")[rows]
        where.reshape(-1, len(positions))[flat] = coords
    flagged = None
    if "qc" in table.columns:
        flagged = np.zeros((n, W, m), bool)
        flagged.reshape(-1)[flat] = table["qc"].to_numpy(dtype="float64")[rows] != 0
    return values, error_std, mask, where, flagged


def _windows(source, values, error_std, mask, positions, flagged):
    out = []
    for c in range(len(values)):
        p = None if positions is None else positions[c]
        f = None if flagged is None else flagged[c]
        parts = [values[c], error_std[c], mask[c]] + [a for a in (p, f) if a is not None]
        out.append(
            WindowObservations(values[c], error_std[c], mask[c], source, content_hash(*parts), p, f)
        )
    return out


def select_windows(
    table: pd.DataFrame, cycle_points, window_offsets_s, locations, *, source: str = ""
) -> list[WindowObservations]:
    """The rows of `table` valid at each cycle's window times `point + window_offsets_s`,
    laid out on `locations` (the observation operator's observed components, in order): one
    `WindowObservations` per cycle point. A row valid in two windows (the end of one, the
    start of the next) goes to both.

    Rows between window times, at a location the layout lacks, or duplicated raise
    `ObservationError` naming them.
    """
    if len(np.atleast_1d(cycle_points)) == 0:
        return []
    locations = np.asarray(locations, dtype="int64")
    n, W, rows, cells, where = _matches(table, cycle_points, window_offsets_s, source)
    l_index = pd.Index(locations).get_indexer(table["location"].to_numpy()[rows])
    if (l_index < 0).any():
        bad = sorted(set(table["location"].to_numpy()[rows][l_index < 0].tolist()))[:10]
        raise ObservationError(
            f"{where}: observations at locations {bad} that the observation layout "
            f"{locations.tolist()} lacks"
        )
    cell = cells * len(locations) + l_index
    if len(np.unique(cell)) != len(cell):
        raise ObservationError(f"{where}: duplicated observations (same time and location)")
    arrays = _window_arrays(table, n, W, len(locations), rows, cells, l_index)
    return _windows(source, *arrays)


def select_positioned_windows(
    table: pd.DataFrame,
    cycle_points,
    window_offsets_s,
    positions: tuple[str, ...],
    capacity: int,
    *,
    source: str = "",
) -> list[WindowObservations]:
    """`select_windows` for observations that carry their positions (the columns
    `positions`): at each window time the rows valid then fill the first of `capacity`
    slots in the file's order, the rest is masked. More than `capacity` observations at
    one time raises `ObservationError` naming the cycle, the time and the count."""
    if len(np.atleast_1d(cycle_points)) == 0:
        return []
    n, W, rows, cells, _ = _matches(table, cycle_points, window_offsets_s, source)
    order = np.argsort(cells, kind="stable")  # rows of one cell together, in file order
    rows, cells = rows[order], cells[order]
    first = np.searchsorted(cells, cells, "left")
    slots = np.arange(len(cells)) - first
    if len(slots) and slots.max() >= capacity:
        k = int(np.argmax(slots))
        cycle, time = divmod(int(cells[k]), W)
        points = np.atleast_1d(cycle_points)
        count = int(np.sum(cells == cells[k]))
        raise ObservationError(
            f"{source or 'observations'}, cycle {iso(parse_time(points[cycle]))}: {count} "
            f"observations at window time {time} (offset {int(window_offsets_s[time])} s), "
            f"more than observations.capacity {capacity}"
        )
    arrays = _window_arrays(table, n, W, capacity, rows, cells, slots, positions)
    return _windows(source, *arrays)


def select_window(
    table: pd.DataFrame, cycle_point, window_offsets_s, locations, *, source: str = ""
) -> WindowObservations:
    """`select_windows` for one cycle point."""
    return select_windows(table, [cycle_point], window_offsets_s, locations, source=source)[0]


def read_window(
    url, cycle_point, window_offsets_s, locations, *, format=None, storage_options=None
) -> WindowObservations:
    """`read_observation_table` then `select_window`: one cycle's observations from a file."""
    table = read_observation_table(url, format=format, storage_options=storage_options)
    return select_window(table, cycle_point, window_offsets_s, locations, source=str(url))


def quality_control(
    obs: WindowObservations, *, valid_range=(-np.inf, np.inf), inside=None
) -> np.ndarray:
    """Static QC flags `(W, m)` (`QC` names them): `missing`, `nonfinite` (value or error,
    or an error that is not positive, or a missing position), `flagged` (by the provider's
    `qc`), `out_of_range` (outside `valid_range`), `outside_domain` (where `inside`, a
    `(W, m)` mask of positions on the model's domain, is false); else `pass`.
    Only `pass` is assimilated. (The check against the background, `gross_error`, is the
    cycle's: `vardax_core.BackgroundCheck`.)"""
    y, sigma_o = obs.values, obs.error_std
    flags = np.full(y.shape, QC.index("pass"), dtype="int8")
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(y) & np.isfinite(sigma_o) & (sigma_o > 0)
        if obs.positions is not None:
            finite &= np.all(np.isfinite(obs.positions), axis=-1)
        lo, hi = valid_range
        out_of_range = finite & ((y < lo) | (y > hi))
    flags[out_of_range] = QC.index("out_of_range")
    if inside is not None:
        flags[finite & ~np.asarray(inside, bool)] = QC.index("outside_domain")
    if obs.flagged is not None:
        flags[obs.mask & obs.flagged] = QC.index("flagged")
    flags[obs.mask & ~finite] = QC.index("nonfinite")
    flags[~obs.mask] = QC.index("missing")
    return flags


# --- the OSSE writer -------------------------------------------------------------------


_TIME_ENCODING = {"time": {"units": "seconds since 1970-01-01", "dtype": "int64"}}


def write_observation_table(
    url, table: pd.DataFrame, *, format: str | None = None, storage_options=None
) -> None:
    """Writes observations in the schema (CSV, Parquet, Zarr or NetCDF by suffix or `format`)."""
    url = str(url)
    fmt = _format(url, format)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ObservationError(f"write_observation_table: the table lacks column(s) {missing}")
    table = table[list(COLUMNS)].reset_index(drop=True)
    times = pd.to_datetime(table["time"], utc=True).dt.tz_localize(None)
    if fmt in ("csv", "parquet"):
        out = table.assign(time=times.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if fmt == "csv":
            out.to_csv(url, index=False, storage_options=storage_options)
        else:
            out.to_parquet(url, index=False, storage_options=storage_options)
        return
    ds = xr.Dataset({c: ("row", table[c].to_numpy()) for c in ("location", "value", "error_std")})
    ds["time"] = ("row", times.to_numpy())
    if fmt == "zarr":
        with quiet_consolidation():
            ds.to_zarr(
                url,
                mode="w",
                encoding=_TIME_ENCODING,
                zarr_format=3,
                consolidated=True,
                storage_options=storage_options or None,
            )
    else:
        data = ds.to_netcdf(engine="h5netcdf", encoding=_TIME_ENCODING)
        with fsspec.open(url, "wb", **(storage_options or {})) as f:
            f.write(bytes(data))


def observation_table(times, locations, values, error_std) -> pd.DataFrame:
    """The schema's table from arrays: `values` and `error_std` `(T, m)` at `times` `(T,)` and
    `locations` `(m,)`; NaN values are left out."""
    times = pd.DatetimeIndex([parse_time(t) for t in times])
    values = np.asarray(values, dtype="float64")
    T, m = values.shape
    table = pd.DataFrame(
        {
            "time": np.repeat(times.to_numpy(), m),
            "location": np.tile(np.asarray(locations, dtype="int64"), T),
            "value": values.ravel(),
            "error_std": np.broadcast_to(np.asarray(error_std, dtype="float64"), (T, m)).ravel(),
        }
    )
    return table[np.isfinite(table["value"])].reset_index(drop=True)


def write_nature_run(
    url, times, states, *, first_guess=None, dim="site", storage_options=None, attrs=None
) -> None:
    """The OSSE truth: `states` `(T, …state shape)` at `times`, a Zarr dataset
    `truth(time, *dims)`, and the first cycle's first guess `first_guess(*dims)` when given.
    `dim`: the state dimension's name, or a tuple of names for a field (`("y", "x")`);
    `attrs`: more attributes of the dataset (the OSSE's lineage)."""
    times = pd.DatetimeIndex([parse_time(t) for t in times])
    states = np.asarray(states)
    dims = (dim,) if isinstance(dim, str) else tuple(dim)
    if states.ndim != 1 + len(dims):
        raise ObservationError(
            f"nature run {url}: states of shape {states.shape} do not match (time, {', '.join(dims)})"
        )
    ds = xr.Dataset(
        {"truth": (("time", *dims), states)},
        coords={"time": times.to_numpy()}
        | {d: np.arange(size) for d, size in zip(dims, states.shape[1:], strict=True)},
        attrs={"title": "vardax-cycle nature run (OSSE truth)", **(attrs or {})},
    )
    if first_guess is not None:
        ds["first_guess"] = (dims, np.reshape(first_guess, states.shape[1:]))
        ds["first_guess"].attrs = {"long_name": "first guess of the first cycle (truth + noise)"}
    with quiet_consolidation():
        ds.to_zarr(
            str(url),
            mode="w",
            encoding=_TIME_ENCODING,
            zarr_format=3,
            consolidated=True,
            storage_options=storage_options or None,
        )


def read_nature_run(url, *, storage_options=None, variable: str = "truth") -> xr.DataArray:
    """`truth(time, …)` of a nature run (or its `first_guess`)."""
    if not _exists(str(url), storage_options):
        raise ObservationError(f"nature run not found: {url}")
    try:
        # lazily indexed, without Dask: a cold start reads one row, and its first Dask
        # compute in a process costs about a second
        ds = xr.open_zarr(
            str(url), storage_options=storage_options or None, consolidated=False, chunks=None
        )
    except Exception as err:  # not a Zarr dataset, or a damaged one: name it
        raise ObservationError(
            f"nature run {url} cannot be read as Zarr: {type(err).__name__}: {err}"
        ) from err
    if variable not in ds:
        raise ObservationError(f"nature run {url} has no variable {variable!r}")
    out = ds[variable]
    out.attrs = {**ds.attrs, **out.attrs}  # the dataset's lineage (osse_id, osse_hash) too
    return out
