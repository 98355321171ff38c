"""The cycle store: one Zarr (v3) store per experiment, at a path or any fsspec URL.

Layout on disk (all readable with plain `xarray.open_zarr(url)`):
- coordinate `cycle` (datetime64, int64 seconds since 1970-01-01), `window_time` and
  `lead_time` (timedelta, seconds), the state dimensions and `obs`;
- per-cycle fields (`background`, `analysis`, `forecast`, `obs_*`) chunked 1 per cycle
  (or `field_chunk` cycles per chunk, for stores filled by long block-mode backfills);
- per-cycle scalars (diagnostics, lineage, `status`) chunked in blocks of `block` cycles,
  so that status queries read a few objects, not one per cycle.

Writing a cycle un-commits its slot (status `empty`), writes every variable of that slot
(absent ones as fill values), then writes `status` last. Every chunk write is one atomic
put (a rename on local disks, one object on S3) and only the lock holder writes, so a crash
leaves the slot `empty`: readers and the resume query treat it as missing, and a rewrite
with the same inputs gives the same bytes. The cycle axis grows in blocks; a crash during
growth is repaired the next time the store is opened for writing.
"""

import asyncio
import contextlib
import hashlib
import subprocess
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr
import zarr.storage

from ._cycles import CycleAxis, cycle_id, iso, iso_duration, parse_time
from ._errors import CycleError, StoreError, StoreMismatchError, StoreNotFoundError
from ._layout import DONE, EMPTY, GATE_VERDICT, QC, STATUS, StoreLayout
from ._lock import StoreLock, break_lock, read_lock

_ENSEMBLE_NAMES = {
    "background_ensemble": "background ensemble members at the window end",
    "analysis_ensemble": "analysis ensemble members at the window end (what the next cycle starts from)",
    "background_spread": "background ensemble standard deviation over members at the window end",
    "analysis_spread": "analysis ensemble standard deviation over members at the window end",
    "forecast_spread": "product forecast ensemble spread by lead time (mean over the state)",
    "ensemble_spread": "background ensemble spread at the window end (mean over the state)",
}

STORE_VERSION = 1


def open_zarr_store(url: str | Path, storage_options: dict | None = None, read_only=False):
    """A zarr `Store` for a local path, `file://…`, or any fsspec URL (`memory://`, `s3://`…)."""
    url = str(url)
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=storage_options or {}, read_only=read_only
    )


def content_hash(*arrays) -> str:
    """sha256 of arrays' bytes (dtype and shape included): the lineage of observations."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vardax-cycle")
    except PackageNotFoundError:
        return "unknown"


def _fill(dtype: np.dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    if dtype.kind == "U":
        return ""
    if dtype.kind in "iu":
        return -1 if dtype.kind == "i" else 0
    raise StoreError(f"no fill value for dtype {dtype}")


class CycleStore:
    """One experiment's cycles. Use `CycleStore.create`, `CycleStore.open`, or
    `CycleStore.open_or_create`; as a writer it holds the store's lock until `close()`
    (or the end of a `with` block)."""

    def __init__(self, url, store, axis: CycleAxis, layout: StoreLayout, writable: bool, lock=None):
        self.url, self._store, self.axis, self.layout = str(url), store, axis, layout
        self.writable, self._lock = writable, lock
        self._async_arrays = None
        self._last_written = None  # (slot, variables, status code) of the last write
        self._group = zarr.open_group(
            store, mode="r+" if writable else "r", zarr_format=3, use_consolidated=False
        )
        self.attrs = dict(self._group.attrs)

    # --- creating and opening ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        url,
        layout: StoreLayout,
        origin,
        interval,
        *,
        experiment: str = "",
        config_text: str = "",
        storage_options: dict | None = None,
        block: int = 256,
        field_chunk: int = 1,
    ) -> "CycleStore":
        """Writes the store's template (metadata only, `block` empty cycles) and returns it
        open for writing. Refuses to overwrite an existing store.

        `field_chunk > 1` chunks the per-cycle fields by `field_chunk` cycles instead of one:
        far fewer objects for long block writes (backfills), where zarr's cost per chunk
        dominates; a single-cycle write then rewrites its chunk (still one atomic put, by
        the lock holder only). It must divide `block`.
        """
        if field_chunk < 1 or block % field_chunk:
            raise StoreError(
                f"field_chunk must be >= 1 and divide block ({block}), got {field_chunk}"
            )
        store = open_zarr_store(url, storage_options)
        if zarr.core.sync.sync(store.exists("zarr.json")):
            raise StoreError(f"a store already exists at {url}: open it instead")
        axis = CycleAxis.parse(origin, interval)
        lock = StoreLock(store, str(url))
        lock.acquire()
        try:
            template = cls._template(layout, axis, block, field_chunk)
            template.attrs = {
                "title": f"vardax-cycle store: {experiment}"
                if experiment
                else "vardax-cycle store",
                "Conventions": "CF-1.8",
                "vardax_store_version": STORE_VERSION,
                "vardax_layout": layout.to_json(),
                "cycle_origin": iso(axis.origin),
                "cycle_interval": iso_duration(axis.interval),
                "cycle_block": block,
                "cycle_field_chunk": field_chunk,
                "experiment": experiment,
                "config_text": config_text,
                "config_hash": hashlib.sha256(config_text.encode()).hexdigest(),
                "package_version": _package_version(),
                "git_commit": _git_commit(),
                "created_at": iso(pd.Timestamp.now(tz="UTC")),
            }
            encoding = cls._encoding(layout, block, field_chunk)
            template.to_zarr(
                store, mode="a", compute=False, encoding=encoding, zarr_format=3, consolidated=False
            )
            cls._write_cycle_coordinate(zarr.open_group(store, mode="r+"), axis, 0, block)
            _consolidate(store)
        except BaseException:
            lock.release()
            raise
        return cls(url, store, axis, layout, writable=True, lock=lock)

    @classmethod
    def open(
        cls,
        url,
        *,
        mode: str = "r",
        layout: StoreLayout | None = None,
        config_text: str | None = None,
        storage_options: dict | None = None,
        stale_after_s: float = 600.0,
    ) -> "CycleStore":
        """Opens an existing store, read-only (`mode="r"`) or as the writer (`mode="a"`).

        With `layout` / `config_text` given, checks the store was made for them; a mismatch
        raises `StoreMismatchError` naming what differs.
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        store = open_zarr_store(url, storage_options, read_only=(mode == "r"))
        if not zarr.core.sync.sync(store.exists("zarr.json")):
            raise StoreNotFoundError(f"no store at {url}")
        attrs = dict(zarr.open_group(store, mode="r", zarr_format=3).attrs)
        if attrs.get("vardax_store_version") != STORE_VERSION:
            raise StoreMismatchError(
                f"{url} is not a vardax-cycle store of version {STORE_VERSION} "
                f"(found vardax_store_version={attrs.get('vardax_store_version')!r})"
            )
        stored = StoreLayout.from_json(attrs["vardax_layout"])
        problems = stored.differences(layout) if layout is not None else []
        if config_text is not None:
            want = hashlib.sha256(config_text.encode()).hexdigest()
            if attrs.get("config_hash") != want:
                problems.append(
                    f"config_hash: store has {attrs.get('config_hash', '')[:12]}… "
                    f"(experiment {attrs.get('experiment')!r}), this config {want[:12]}…"
                )
        if problems:
            raise StoreMismatchError(
                f"store {url} was made for another experiment: " + "; ".join(problems)
            )
        axis = CycleAxis.parse(attrs["cycle_origin"], attrs["cycle_interval"])
        lock = None
        if mode == "a":
            lock = StoreLock(store, str(url), stale_after_s)
            lock.acquire()
        out = cls(url, store, axis, stored, writable=(mode == "a"), lock=lock)
        if mode == "a":
            out._repair_growth()
        return out

    @classmethod
    def open_or_create(
        cls,
        url,
        layout,
        origin,
        interval,
        *,
        experiment="",
        config_text="",
        storage_options=None,
        block=256,
        field_chunk=1,
    ):
        """The writer of the store at `url`, created if it does not exist yet."""
        store = open_zarr_store(url, storage_options)
        if zarr.core.sync.sync(store.exists("zarr.json")):
            out = cls.open(
                url,
                mode="a",
                layout=layout,
                config_text=config_text,
                storage_options=storage_options,
            )
            if out.axis != CycleAxis.parse(origin, interval):
                out.close()
                raise StoreMismatchError(
                    f"store {url} has cycles from {iso(out.axis.origin)} every {out.axis.interval}, "
                    f"expected from {iso(parse_time(origin))} every {pd.Timedelta(interval)}"
                )
            return out
        return cls.create(
            url,
            layout,
            origin,
            interval,
            experiment=experiment,
            config_text=config_text,
            storage_options=storage_options,
            block=block,
            field_chunk=field_chunk,
        )

    @staticmethod
    def break_lock(url, storage_options: dict | None = None):
        """Removes a (stale) writer lock; **returns** the `LockInfo` it held, or None."""
        return break_lock(open_zarr_store(url, storage_options))

    def lock_holder(self):
        return read_lock(self._store)

    def close(self) -> None:
        self._last_written = None  # without the lock, another writer may come
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.writable = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- template ---------------------------------------------------------------------

    @staticmethod
    def _template(layout: StoreLayout, axis: CycleAxis, n: int, field_chunk: int = 1) -> xr.Dataset:
        import dask.array as da  # only to create a store: it costs a second to import

        data_vars = {}
        for name, (dims, shape, dtype) in layout.variables().items():
            chunks = (field_chunk, *shape) if shape else (n,)
            data_vars[name] = (
                ("cycle", *dims),
                da.full((n, *shape), _fill(dtype), dtype=dtype, chunks=chunks),
            )
        data_vars["status"] = (("cycle",), da.zeros((n,), dtype="int8", chunks=(n,)))
        coords = {
            "cycle": ("cycle", axis.points(0, n)),
            "window_time": ("window_time", pd.to_timedelta(layout.window_offsets_s, unit="s")),
            "obs": ("obs", np.arange(layout.obs_size)),
        }
        if layout.lead_offsets_s:
            coords["lead_time"] = ("lead_time", pd.to_timedelta(layout.lead_offsets_s, unit="s"))
        if layout.members:
            coords["member"] = ("member", np.arange(layout.members))
        for k, (dim, size) in enumerate(layout.state_dims):
            values = np.arange(size) if layout.state_coords is None else layout.state_coords[k]
            coords[dim] = (dim, np.asarray(values))
        if layout.obs_points is not None:
            points = np.asarray(layout.obs_points)
            coords["obs_y"] = ("obs", points[:, 0], {"long_name": "observation y (grid cells)"})
            coords["obs_x"] = ("obs", points[:, 1], {"long_name": "observation x (grid cells)"})
        ds = xr.Dataset(data_vars, coords=coords)
        ds["status"].attrs = {
            "long_name": "cycle status (written last)",
            "flag_values": np.arange(len(STATUS), dtype="int8"),
            "flag_meanings": " ".join(STATUS),
        }
        ds["obs_qc"].attrs = {
            "long_name": "observation quality-control flag",
            "flag_values": np.arange(len(QC), dtype="int8"),
            "flag_meanings": " ".join(QC),
        }
        for dim in layout.obs_position_dims:
            ds[f"obs_{dim}"].attrs = {
                "long_name": f"observation position in {dim} (model coordinates; NaN: empty slot)"
            }
        for name, what in _ENSEMBLE_NAMES.items():
            if name in ds:
                ds[name].attrs = {"long_name": what}
        ds["obs_source"].attrs = {"long_name": "observation source of the cycle"}
        ds["obs_hash"].attrs = {"long_name": "sha256 of the cycle's observations"}
        ds["status_reason"].attrs = {
            "long_name": "why a cycle is degraded, failed or skipped (empty when committed)"
        }
        ds["gate_verdict"].attrs = {
            "long_name": "verdict of the gate",
            "flag_values": np.arange(len(GATE_VERDICT), dtype="int8"),
            "flag_meanings": " ".join(GATE_VERDICT),
        }
        return ds

    @staticmethod
    def _encoding(layout: StoreLayout, block: int, field_chunk: int = 1) -> dict:
        enc = {
            "cycle": {"units": "seconds since 1970-01-01", "dtype": "int64", "chunks": (block,)},
            "window_time": {"units": "seconds", "dtype": "int64"},
            "status": {"chunks": (block,), "fill_value": 0},
        }
        if layout.lead_offsets_s:
            enc["lead_time"] = {"units": "seconds", "dtype": "int64"}
        for name, (_, shape, dtype) in layout.variables().items():
            chunks = (field_chunk, *shape) if shape else (block,)
            enc[name] = {"chunks": chunks, "fill_value": _fill(dtype)}
        return enc

    @staticmethod
    def _write_cycle_coordinate(group, axis: CycleAxis, start: int, stop: int) -> None:
        seconds = axis.points(start, stop).astype("datetime64[s]").astype("int64")
        group["cycle"][start:stop] = seconds

    # --- growth -----------------------------------------------------------------------

    def _arrays(self):
        return dict(self._group.arrays())

    def _data_arrays(self) -> dict[str, "zarr.AsyncArray"]:
        """The per-cycle arrays (async handles), cached until the cycle axis grows."""
        if self._async_arrays is None:
            names = [*self.layout.variables(), "status"]
            self._async_arrays = {name: self._group[name].async_array for name in names}
        return dict(self._async_arrays)

    @property
    def n_slots(self) -> int:
        """Cycle slots the store holds now (committed or not)."""
        return int(self._group["status"].shape[0])

    def _resize_all(self, n: int) -> None:
        arrays = self._arrays()
        for name, arr in arrays.items():
            if (
                "cycle" in (arr.metadata.dimension_names or ())
                and name != "status"
                and arr.shape[0] < n
            ):
                arr.resize((n, *arr.shape[1:]))
        self._write_cycle_coordinate(self._group, self.axis, 0, n)
        if arrays["status"].shape[0] < n:
            arrays["status"].resize((n,))
        _consolidate(self._store)
        self._group = zarr.open_group(self._store, mode="r+", zarr_format=3, use_consolidated=False)
        self._async_arrays = None

    def _ensure_slots(self, n: int) -> None:
        if n <= self.n_slots:
            return
        block = int(self.attrs.get("cycle_block", 256))
        self._resize_all(-(-n // block) * block)

    def _repair_growth(self) -> None:
        lengths = {
            arr.shape[0]
            for arr in self._arrays().values()
            if "cycle" in (arr.metadata.dimension_names or ())
        }
        if len(lengths) > 1:
            self._resize_all(max(lengths))

    # --- writing ----------------------------------------------------------------------

    def _check_writable(self):
        if not self.writable or self._lock is None:
            raise StoreError(f"store {self.url} is open read-only: open it with mode='a' to write")

    def _coerce(self, name: str, value, shape, dtype, where: str) -> np.ndarray:
        value = np.asarray(value)
        dtype = np.dtype(dtype)
        if value.shape != shape:
            raise StoreError(
                f"{where}: variable {name!r} has shape {value.shape}, the store expects {shape}"
            )
        if dtype.kind == "U":
            return value.astype(dtype)
        if not np.can_cast(value.dtype, dtype, casting="same_kind"):
            raise StoreError(
                f"{where}: variable {name!r} has dtype {value.dtype}, the store holds {dtype}"
            )
        return value.astype(dtype)

    def write_cycles(
        self,
        first,
        data: Mapping[str, np.ndarray],
        status,
        *,
        on_variable_written: Callable[[str], None] | None = None,
    ) -> None:
        """Writes `n` consecutive cycles from cycle point `first` in one region write.

        **Arguments:**
        - `data`: variable → array with a leading axis of `n` cycles. Variables left out are
          written as fill values (so a re-run overwrites its whole slot).
        - `status`: one status name (or code) for all, or one per cycle.
        - `on_variable_written`: called with each variable's name once it is written
          (progress reporting).
        """
        self._check_writable()
        start = self.axis.index(first)
        variables = self.layout.variables()
        unknown = sorted(set(data) - set(variables))
        if unknown:
            raise StoreError(
                f"cycle {cycle_id(first)}: unknown variables {unknown}; the store holds {sorted(variables)}"
            )
        statuses = np.array([_status_code(s) for s in np.atleast_1d(status)], dtype="int8")
        n = {np.shape(v)[0] for v in data.values()} | (
            {len(statuses)} if len(statuses) > 1 else set()
        )
        if len(n) > 1:
            raise StoreError(
                f"cycle {cycle_id(first)}: variables disagree on the number of cycles: {sorted(n)}"
            )
        count = n.pop() if n else 1
        statuses = np.broadcast_to(statuses, (count,))
        where = (
            f"cycles {cycle_id(first)}…{cycle_id(self.axis.point(start + count - 1))}"
            if count > 1
            else f"cycle {cycle_id(first)}"
        )
        arrays = {
            name: (
                self._coerce(name, data[name], (count, *shape), dtype, where)
                if name in data
                else np.full((count, *shape), _fill(dtype), dtype=dtype)
            )
            for name, (_, shape, dtype) in variables.items()
        }
        self._lock.heartbeat()
        self._ensure_slots(start + count)
        region = slice(start, start + count)
        targets = self._data_arrays()
        status_array = targets.pop("status")

        async def write_data():
            async def one(name, values):
                await targets[name].setitem(region, values)
                if on_variable_written is not None:
                    on_variable_written(name)

            await asyncio.gather(*(one(name, values) for name, values in arrays.items()))

        self._last_written = None
        zarr.core.sync.sync(status_array.setitem(region, np.int8(EMPTY)))
        zarr.core.sync.sync(write_data())
        zarr.core.sync.sync(status_array.setitem(region, statuses))
        # The writer holds the lock, so the store's last cycle stays what was written: the
        # next cycle reads it from memory (`read_cycle`, `status_of`), not back from the store.
        last = {name: np.asarray(v[-1], dtype=targets[name].dtype) for name, v in arrays.items()}
        self._last_written = (start + count - 1, last, int(statuses[-1]))

    def write_cycle(self, point, data: Mapping[str, np.ndarray], status="committed", **kw) -> None:
        """Writes one cycle (see `write_cycles`); `data` without the cycle axis."""
        self.write_cycles(point, {k: np.asarray(v)[None] for k, v in data.items()}, status, **kw)

    def mark(self, point, status) -> None:
        """Records a cycle with no data (e.g. `skipped`, or `failed` before any output)."""
        self.write_cycle(point, {}, status)

    # --- queries ----------------------------------------------------------------------

    def statuses(self) -> np.ndarray:
        """Status codes of every slot (int8; `STATUS[code]` names them)."""
        return np.asarray(self._group["status"][:])

    def status_table(self, start=None, end=None) -> pd.DataFrame:
        """One row per cycle slot: cycle point, id, status, and the scalar diagnostics."""
        codes = self.statuses()
        lo = 0 if start is None else self.axis.index(start)
        hi = len(codes) if end is None else min(self.axis.index(end) + 1, len(codes))
        points = self.axis.points(lo, hi)
        table = pd.DataFrame(
            {
                "cycle": points,
                "cycle_id": [cycle_id(p) for p in points],
                "status": pd.Categorical.from_codes(codes[lo:hi], categories=list(STATUS)),
            }
        )
        for name, (_, shape, _dtype) in self.layout.variables().items():
            if not shape:
                table[name] = np.asarray(self._group[name][lo:hi])
        return table.set_index("cycle")

    def committed_cycles(self) -> list[pd.Timestamp]:
        """Cycle points whose slot is whole (`committed`, `degraded` or `skipped`)."""
        idx = np.flatnonzero(np.isin(self.statuses(), DONE))
        return [self.axis.point(i) for i in idx]

    def not_done(self, start, end) -> np.ndarray:
        """Indices of the cycles in `start … end` (both included) still to be run: not
        `committed`, `degraded` or `skipped` (slots beyond the store's end are empty)."""
        lo, hi = self.axis.index(start), self.axis.index(end) + 1
        if hi <= lo:
            raise CycleError(f"the end {cycle_id(end)} is before the start {cycle_id(start)}")
        codes = self.statuses()[lo:hi]
        codes = np.concatenate([codes, np.zeros(max(0, hi - lo - len(codes)), dtype="int8")])
        return lo + np.flatnonzero(~np.isin(codes, DONE))

    def first_not_committed(self, start, end) -> pd.Timestamp | None:
        """The first cycle point in `start … end` (both included) still to be run, or None."""
        todo = self.not_done(start, end)
        return None if len(todo) == 0 else self.axis.point(int(todo[0]))

    def last_committed(self) -> pd.Timestamp | None:
        idx = np.flatnonzero(np.isin(self.statuses(), DONE))
        return None if len(idx) == 0 else self.axis.point(int(idx[-1]))

    def status_of(self, point) -> str:
        i = self.axis.index(point)
        if self._last_written is not None and self._last_written[0] == i:
            return STATUS[self._last_written[2]]
        return STATUS[int(self._group["status"][i])] if i < self.n_slots else "empty"

    def read_cycle(self, point, *, require_done: bool = True) -> dict[str, np.ndarray]:
        """The variables of one cycle as arrays. Refuses a cycle that is not whole (not
        `committed`/`degraded`), unless `require_done=False`."""
        i = self.axis.index(point)
        status = self.status_of(point)
        if require_done and status not in ("committed", "degraded"):
            raise CycleError(f"cycle {cycle_id(point)} in {self.url} is {status}, not committed")
        if self._last_written is not None and self._last_written[0] == i:
            out = {name: np.array(v) for name, v in self._last_written[1].items()}
        else:
            out = {name: np.asarray(self._group[name][i]) for name in self.layout.variables()}
        out["status"] = np.asarray(status)
        return out

    def dataset(self) -> xr.Dataset:
        """The whole store as a lazy xarray Dataset (what `xarray.open_zarr` gives)."""
        return xr.open_zarr(self._store, zarr_format=3)


@contextlib.contextmanager
def quiet_consolidation():
    """Writing consolidated metadata (so `xarray.open_zarr(url)` opens in one read, without
    a warning) without zarr's note that consolidation is not yet in the v3 spec; xarray and
    zarr-python read it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def _consolidate(store) -> None:
    with quiet_consolidation():
        zarr.consolidate_metadata(store, zarr_format=3)


def _status_code(status) -> int:
    if isinstance(status, str):
        if status not in STATUS:
            raise StoreError(f"unknown cycle status {str(status)!r}; one of {STATUS}")
        return STATUS.index(status)
    code = int(status)
    if not 0 <= code < len(STATUS):
        raise StoreError(f"unknown cycle status code {code}")
    return code


__all__ = ["CycleStore", "content_hash", "open_zarr_store"]
