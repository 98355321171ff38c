"""The cycle store: one Zarr (v3) store per experiment, at a path or any fsspec URL.

Layout on disk (all readable with plain `xarray.open_zarr(url)`):
- coordinate `cycle` (datetime64, int64 seconds since 1970-01-01), `window_time` and
  `lead_time` (timedelta, seconds), the state dimensions and `obs`;
- per-cycle fields (`background`, `analysis`, `forecast`, `obs_*`) chunked 1 per cycle
  (or `field_chunk` cycles per chunk, for stores filled by long block-mode backfills);
- per-cycle scalars (diagnostics, lineage, `status`) chunked in blocks of `block` cycles,
  so that status queries read a few objects, not one per cycle.

- `checksum (cycle, checksum_of)`: a CRC-32 of each variable's values and of the status
  code, recorded at each commit (−1: not recorded); reads check it, `verify` checks all.

Writing a cycle into an empty slot writes every variable of that slot (absent ones as fill
values), then its checksums, then `status` last. Rewriting slots that hold a cycle (a rerun)
first writes the new cycles aside into a journal and commits that, then un-commits the slots
(status `empty`), rewrites them and removes the journal (`_integrity`). Every chunk write is
one atomic put (a rename on local disks, one object on S3) and only the lock holder writes,
so at any crash each slot is its old cycle, its new one (journaled: readers of the store
read it from the journal, and the next writer completes the rewrite), or `empty` if it had
none; a rewrite with the same inputs gives the same bytes. A failed write (a full disk)
raises `StoreError` saying which of these the cycles were left in.

A store is created only where nothing else is (a missing or empty directory): its root is
written first, marked `vardax_creating` until the template is whole, so an interrupted
creation is recognised, and recreated by the next writer. The cycle axis grows in blocks; a
crash during growth is repaired the next time the store is opened for writing.
"""

import asyncio
import contextlib
import hashlib
import logging
import subprocess
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml
import zarr
import zarr.storage

from ._cycles import CycleAxis, cycle_id, iso, iso_duration, parse_time
from ._errors import (
    CycleError,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    StoreNotFoundError,
)
from ._integrity import (
    NOT_RECORDED,
    digest,
    digests,
    discard_journal,
    journal_leftovers,
    read_journal,
    write_journal,
)
from ._layout import DONE, EMPTY, GATE_VERDICT, QC, STATUS, StoreLayout
from ._lock import LOCK_GROUP, StoreLock, break_lock, read_lock

logger = logging.getLogger("vardax.storage")

# the next cycle point: the window end, unless windows overlap (`shift_steps` into it)
_ENSEMBLE_NAMES = {
    "background_ensemble": "background ensemble members at the next cycle point",
    "analysis_ensemble": "analysis ensemble members at the next cycle point (what the next cycle starts from)",
    "background_spread": "background ensemble standard deviation over members at the next cycle point",
    "analysis_spread": "analysis ensemble standard deviation over members at the next cycle point",
    "forecast_spread": "product forecast ensemble spread by lead time (mean over the state)",
    "ensemble_spread": "background ensemble spread at the next cycle point (mean over the state)",
}

STORE_VERSION = 1
CREATING = "vardax_creating"  # root attribute while the template is being written


def _local_path(url) -> Path | None:
    """The path of a local store (a plain path or `file://`), None for a remote URL."""
    url = str(url)
    return (
        Path(url.removeprefix("file://")) if "://" not in url or url.startswith("file://") else None
    )


def _exists(store, key: str) -> bool:
    return zarr.core.sync.sync(store.exists(key))


def _foreign_keys(store, limit: int = 4) -> list[str]:
    """Up to `limit` top-level entries of a store's location that a vardax-cycle store did
    not put there (its lock and the halves of interrupted atomic writes aside)."""

    async def scan():
        found: list[str] = []
        try:
            async for key in store.list():
                top = key.split("/", 1)[0]
                if top != LOCK_GROUP and not key.endswith(".partial") and top not in found:
                    found.append(top)
                    if len(found) >= limit:
                        break
        except FileNotFoundError:
            pass
        return found

    return zarr.core.sync.sync(scan())


def _root_attrs(store, url) -> dict:
    try:
        return dict(zarr.open_group(store, mode="r", zarr_format=3).attrs)
    except (ValueError, KeyError, TypeError) as err:  # a damaged zarr.json
        raise StoreCorruptError(
            f"store {url}: its root metadata (zarr.json) is damaged: {err}"
        ) from None


def _creation_interrupted(store, attrs: dict) -> bool:
    """A root written by `create` whose template is not whole (or an older store that a
    full disk stopped before its `status` array: it can hold no cycle)."""
    if attrs.get(CREATING):
        return True
    ours = "vardax_store_version" in attrs or _exists(store, f"{LOCK_GROUP}/zarr.json")
    return ours and not _exists(store, "status/zarr.json")


def _refuse_a_file(url) -> None:
    path = _local_path(url)
    if path is not None and path.exists() and not path.is_dir():
        raise StoreMismatchError(
            f"store {url} is a file, not a store: name a directory (store.url) that is a store, "
            "or that is empty or missing for a new one"
        )


@contextlib.contextmanager
def _written(where: str, url, state: str):
    """Turns an I/O failure of the store (a full disk, a lost mount) into one `StoreError`
    naming the cycles and what state they were left in."""
    try:
        yield
    except OSError as err:
        raise StoreError(
            f"{where}: writing to store {url} failed ({err.strerror or err}); {state}"
        ) from err


def open_zarr_store(url: str | Path, storage_options: dict | None = None, read_only=False):
    """A zarr `Store` for a local path, `file://…`, or any fsspec URL (`memory://`, `s3://`…)."""
    path = _local_path(url)
    if path is not None:
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        str(url), storage_options=storage_options or {}, read_only=read_only
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


def _leaves(node, prefix: str = "") -> dict[str, object]:
    """The leaves of a YAML mapping as `dotted.key → value` (a list is one leaf)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out |= _leaves(value, f"{prefix}{key}.")
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1] or "(top level)": node}


def config_differences(old_text: str, new_text: str) -> list[str]:
    """What differs between two config texts (YAML: a store's `config_text` and the one it
    is opened with): one line `key.path: store has X, this config Y` per differing leaf
    (`not set` for a key one of them lacks: its default), in key order. Empty when the
    two say the same (or the store's text is empty or not YAML: nothing to compare)."""
    try:
        old, new = yaml.safe_load(old_text or "") or {}, yaml.safe_load(new_text or "") or {}
    except yaml.YAMLError:
        return []
    a, b = _leaves(old), _leaves(new)
    missing = object()

    def shown(value) -> str:
        if value is missing:
            return "the default"
        return (
            yaml.safe_dump(value, default_flow_style=True, width=10**6)
            .strip()
            .removesuffix("\n...")
        )

    return [
        f"{key}: store has {shown(a.get(key, missing))}, this config {shown(b.get(key, missing))}"
        for key in sorted(a.keys() | b.keys())
        if a.get(key, missing) != b.get(key, missing)
    ]


class CycleStore:
    """One experiment's cycles. Use `CycleStore.create`, `CycleStore.open`, or
    `CycleStore.open_or_create`; as a writer it holds the store's lock until `close()`
    (or the end of a `with` block)."""

    def __init__(self, url, store, axis: CycleAxis, layout: StoreLayout, writable: bool, lock=None):
        self.url, self._store, self.axis, self.layout = str(url), store, axis, layout
        self.writable, self._lock = writable, lock
        self._async_arrays = None
        self._last_written = None  # (slot, variables, status code) of the last write
        self._journal_pending = not writable  # a reader looks for a journal at each read
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
        open for writing. Refuses to overwrite an existing store; one whose creation was
        interrupted is no store, and is created again.

        `field_chunk > 1` chunks the per-cycle fields by `field_chunk` cycles instead of one:
        far fewer objects for long block writes (backfills), where zarr's cost per chunk
        dominates; a single-cycle write then rewrites its chunk (still one atomic put, by
        the lock holder only). It must divide `block`.
        """
        if field_chunk < 1 or block % field_chunk:
            raise StoreError(
                f"field_chunk must be >= 1 and divide block ({block}), got {field_chunk}"
            )
        _refuse_a_file(url)
        store = open_zarr_store(url, storage_options)
        interrupted = _exists(store, "zarr.json")  # a creation cut short is no store: redone
        if interrupted and not _creation_interrupted(store, _root_attrs(store, url)):
            raise StoreError(f"a store already exists at {url}: open it instead")
        foreign = [] if interrupted else _foreign_keys(store)
        if foreign:
            raise StoreMismatchError(
                f"store {url} would be created among other files ({', '.join(foreign)}"
                f"{' …' if len(foreign) >= 4 else ''}): a store is created only in an empty or "
                "missing directory; name another store.url"
            )
        axis = CycleAxis.parse(origin, interval)
        lock = StoreLock(store, str(url))
        lock.acquire()
        try:
            if interrupted:
                logger.warning("store %s: its creation was interrupted; creating it again", url)

                async def remove_all():
                    keys = [k async for k in store.list() if k.split("/", 1)[0] != LOCK_GROUP]
                    for key in keys:
                        await store.delete(key)

                with _written(f"recreating store {url}", url, "it holds no cycle"):
                    zarr.core.sync.sync(remove_all())
            cls._write_template(
                store, url, layout, axis, experiment, config_text, block, field_chunk
            )
        except BaseException:
            lock.release()
            raise
        return cls(url, store, axis, layout, writable=True, lock=lock)

    @classmethod
    def _write_template(
        cls, store, url, layout, axis, experiment, config_text, block, field_chunk
    ) -> None:
        """The root first (marked as being created), then the arrays and the cycle
        coordinate, then the root unmarked and consolidated."""
        with _written(f"creating store {url}", url, "it holds no cycle: the next run recreates it"):
            zarr.create_group(store, zarr_format=3, attributes={CREATING: True})
            template = cls._template(layout, axis, block, field_chunk)
            template.attrs = {
                CREATING: True,
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
            group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
            cls._write_cycle_coordinate(group, axis, 0, block)
            attrs = dict(group.attrs)
            del attrs[CREATING]
            group.attrs.put(attrs)
            _consolidate(store)

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
        _refuse_a_file(url)
        store = open_zarr_store(url, storage_options, read_only=(mode == "r"))
        if not _exists(store, "zarr.json"):
            raise StoreNotFoundError(f"no store at {url}")
        attrs = _root_attrs(store, url)
        if _creation_interrupted(store, attrs):
            raise StoreCorruptError(
                f"the creation of store {url} was interrupted (its template is not whole): it "
                "holds no cycle, and the next `vardax-cycle run` of its experiment recreates it"
            )
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
                keys = config_differences(attrs.get("config_text", ""), config_text)
                # the config keys are the cause; the layout's differences follow from them
                problems = keys or [
                    *problems,
                    f"config_hash: store has {attrs.get('config_hash', '')[:12]}… "
                    f"(experiment {attrs.get('experiment')!r}), this config {want[:12]}…",
                ]
        if problems:
            raise StoreMismatchError(
                f"store {url} was made for another experiment: " + "; ".join(problems)
            )
        axis = CycleAxis.parse(attrs["cycle_origin"], attrs["cycle_interval"])
        lock = None
        if mode == "a":
            lock = StoreLock(store, str(url), stale_after_s)
            lock.acquire()
        try:
            out = cls(url, store, axis, stored, writable=(mode == "a"), lock=lock)
            if mode == "a":
                out._repair_growth()
                out._roll_forward()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
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
        """The writer of the store at `url`, created if it does not exist yet (or recreated,
        if its creation was interrupted)."""
        _refuse_a_file(url)
        store = open_zarr_store(url, storage_options)
        if _exists(store, "zarr.json") and not _creation_interrupted(
            store, _root_attrs(store, url)
        ):
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

    @staticmethod
    def lock_info(url, storage_options: dict | None = None):
        """The writer lock of the store at `url`: (holder, None), or (None, the error) for a
        damaged lock, or (None, None) when it is not locked."""
        _refuse_a_file(url)
        store = open_zarr_store(url, storage_options, read_only=True)
        root, locked = _exists(store, "zarr.json"), _exists(store, f"{LOCK_GROUP}/zarr.json")
        if not root and not locked:
            raise StoreNotFoundError(f"no store at {url}")
        if not locked:
            attrs = _root_attrs(store, url)
            if "vardax_store_version" not in attrs and CREATING not in attrs:
                raise StoreMismatchError(f"{url} is not a vardax-cycle store (no cycle lock)")
        try:
            return read_lock(store, str(url)), None
        except StoreCorruptError as err:
            return None, str(err)

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
        summed = checksum_names(layout)
        data_vars["checksum"] = (
            ("cycle", "checksum_of"),
            da.full((n, len(summed)), NOT_RECORDED, dtype="int64", chunks=(n, len(summed))),
        )
        coords = {
            "checksum_of": ("checksum_of", np.array(summed)),
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
        ds["checksum"].attrs = {
            "long_name": "CRC-32 of each variable's values in the cycle, written at its commit "
            "(-1: not recorded)",
        }
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
            "checksum": {
                "chunks": (block, len(checksum_names(layout))),
                "fill_value": NOT_RECORDED,
            },
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
            names = [*self.layout.variables(), "status", "checksum"]
            self._async_arrays = {
                name: self._group[name].async_array for name in names if name in self._group
            }
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
        with _written(
            f"growing store {self.url} to {n} cycles", self.url, "its cycles are as they were"
        ):
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
        with _written(where, self.url, "nothing was written (the store is as it was)"):
            self._lock.heartbeat()
        self._ensure_slots(start + count)
        region = slice(start, start + count)
        sums = (
            digests(arrays, statuses, checksum_names(self.layout))
            if "checksum" in self._data_arrays()
            else None
        )
        self._last_written = None
        if np.any(self._read_status(region) != EMPTY):
            # a rewrite: the new cycles are committed aside first (the journal)
            try:
                with _written(where, self.url, "the store is as it was (the previous versions)"):
                    write_journal(self._store, start, arrays, statuses, sums)
            except BaseException:
                with contextlib.suppress(Exception):
                    discard_journal(self._store)
                raise
            self._journal_pending = True
            with _written(
                where,
                self.url,
                "the new versions are journaled: readers see them, and the next writer "
                "completes the rewrite",
            ):
                self._apply(region, arrays, statuses, sums, True, on_variable_written)
            try:
                discard_journal(self._store)
                self._journal_pending = False
            except OSError as err:  # harmless: the next writer applies it again and removes it
                logger.warning("store %s: could not remove its journal yet (%s)", self.url, err)
        else:
            with _written(where, self.url, "they were not written and are still to run"):
                self._apply(region, arrays, statuses, sums, False, on_variable_written)
        # The writer holds the lock, so the store's last cycle stays what was written: the
        # next cycle reads it from memory (`read_cycle`, `status_of`), not back from the store.
        targets = self._data_arrays()
        last = {name: np.asarray(v[-1], dtype=targets[name].dtype) for name, v in arrays.items()}
        self._last_written = (start + count - 1, last, int(statuses[-1]))

    def _apply(self, region, arrays, statuses, sums, uncommit: bool, on_variable_written=None):
        """Writes slots `region`: un-committed first when they hold a cycle, the variables,
        their checksums, the status last."""
        targets = self._data_arrays()
        status_array = targets.pop("status")
        checksum_array = targets.pop("checksum", None)

        async def write_data():
            async def one(name, values):
                await targets[name].setitem(region, values)
                if on_variable_written is not None:
                    on_variable_written(name)

            await asyncio.gather(*(one(name, values) for name, values in arrays.items()))

        if uncommit:
            zarr.core.sync.sync(status_array.setitem(region, np.int8(EMPTY)))
        zarr.core.sync.sync(write_data())
        if checksum_array is not None and sums is not None:
            zarr.core.sync.sync(checksum_array.setitem(region, sums))
        zarr.core.sync.sync(status_array.setitem(region, statuses))

    def _roll_forward(self) -> None:
        """Completes a journaled rewrite that a crash interrupted, or discards a journal
        that was not committed (its slots were not touched)."""
        journal = read_journal(self._store)
        if journal is None:
            if journal_leftovers(self._store):
                discard_journal(self._store)
            return
        if not journal.complete:
            logger.warning("store %s: discarding an unfinished rewrite journal", self.url)
            discard_journal(self._store)
            return
        first, last = (
            self.axis.point(journal.start),
            self.axis.point(journal.start + journal.count - 1),
        )
        where = f"cycles {cycle_id(first)}…{cycle_id(last)}"
        logger.warning("store %s: completing the interrupted rewrite of %s", self.url, where)
        self._journal_pending = True
        arrays = {name: journal.read(name) for name in self.layout.variables()}
        sums = journal.read("checksum") if "checksum" in journal.group else None
        self._ensure_slots(journal.start + journal.count)
        region = slice(journal.start, journal.start + journal.count)
        with _written(where, self.url, "they stay journaled: readers see the new versions"):
            self._apply(region, arrays, journal.statuses(), sums, True)
            discard_journal(self._store)
        self._journal_pending = False

    def write_cycle(self, point, data: Mapping[str, np.ndarray], status="committed", **kw) -> None:
        """Writes one cycle (see `write_cycles`); `data` without the cycle axis."""
        self.write_cycles(point, {k: np.asarray(v)[None] for k, v in data.items()}, status, **kw)

    def mark(self, point, status) -> None:
        """Records a cycle with no data (e.g. `skipped`, or `failed` before any output)."""
        self.write_cycle(point, {}, status)

    # --- queries ----------------------------------------------------------------------

    def _journal(self):
        """A committed journal whose cycles readers see in place of their slots, or None."""
        if not self._journal_pending:
            return None
        journal = read_journal(self._store)
        return journal if journal is not None and journal.complete else None

    def _read_status(self, rows=slice(None)) -> np.ndarray:
        try:
            return np.asarray(self._group["status"][rows])
        except Exception as err:  # a chunk that does not decode
            raise StoreCorruptError(
                f"store {self.url}: the status array is unreadable ({type(err).__name__}: {err}); "
                f"`vardax-cycle verify {self.url}` names the damaged cycles"
            ) from err

    def statuses(self) -> np.ndarray:
        """Status codes of every slot (int8; `STATUS[code]` names them); the cycles of an
        interrupted rewrite as its journal holds them."""
        codes = self._read_status()
        journal = self._journal()
        if journal is not None:
            hi = min(journal.start + journal.count, len(codes))
            codes[journal.start : hi] = journal.statuses()[: hi - journal.start]
        return codes

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
        journal = self._journal()
        for name, (_, shape, _dtype) in self.layout.variables().items():
            if not shape:
                values = np.asarray(self._group[name][lo:hi])
                if journal is not None:
                    for i in range(max(lo, journal.start), min(hi, journal.start + journal.count)):
                        values[i - lo] = journal.read(name, i - journal.start)
                table[name] = values
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
        journal = self._journal()
        if journal is not None and journal.covers(i):
            return STATUS[int(journal.statuses()[i - journal.start])]
        return STATUS[int(self._read_status(i))] if i < self.n_slots else "empty"

    def read_cycle(self, point, *, require_done: bool = True) -> dict[str, np.ndarray]:
        """The variables of one cycle as arrays. Refuses a cycle that is not whole (not
        `committed`/`degraded`), unless `require_done=False`."""
        i = self.axis.index(point)
        status = self.status_of(point)
        if require_done and status not in ("committed", "degraded"):
            raise CycleError(f"cycle {cycle_id(point)} in {self.url} is {status}, not committed")
        journal = self._journal()
        if self._last_written is not None and self._last_written[0] == i:
            out = {name: np.array(v) for name, v in self._last_written[1].items()}
        elif journal is not None and journal.covers(i):
            out = {name: journal.read(name, i - journal.start) for name in self.layout.variables()}
        else:
            out = self._read_slot(i, status)
        out["status"] = np.asarray(status)
        return out

    def _damaged(self, i: int, name: str, what: str) -> StoreCorruptError:
        c = cycle_id(self.axis.point(i))
        return StoreCorruptError(
            f"cycle {c} in {self.url}: {name} {what}; recompute the cycle with `vardax-cycle "
            f"backfill CONFIG --start {c} --end {c} --rerun` (`vardax-cycle verify {self.url}` "
            "checks every cycle)"
        )

    def _read_slot(self, i: int, status: str) -> dict[str, np.ndarray]:
        """One slot's variables from the store, each checked against its checksum."""
        names = checksum_names(self.layout)
        arrays = self._data_arrays()
        if arrays["status"].shape[0] <= i:  # grown since these handles were made
            self._async_arrays = None
            arrays = self._data_arrays()
        wanted = [*self.layout.variables(), *(["checksum"] if "checksum" in arrays else [])]

        async def read_all():  # every variable's chunk at once
            return await asyncio.gather(
                *(arrays[name].getitem(slice(i, i + 1)) for name in wanted),
                return_exceptions=True,
            )

        out = {}
        for name, value in zip(wanted, zarr.core.sync.sync(read_all()), strict=True):
            if isinstance(value, Exception):
                raise self._damaged(
                    i, name, f"does not decode ({type(value).__name__}: {value})"
                ) from value
            out[name] = np.asarray(value)[0, ...]  # a 0-d array of the array's dtype
        if "checksum" not in out:
            return out
        recorded = out.pop("checksum")
        values = out | {"status": np.int8(STATUS.index(status))}
        for name, want in zip(names, recorded, strict=True):
            if want != NOT_RECORDED and digest(values[name]) != want:
                raise self._damaged(i, name, "does not match the checksum written at its commit")
        return out

    def verify(self, on_block: Callable[[int, int], None] | None = None) -> "Verification":
        """Reads every written cycle (chunk by chunk) and checks each variable against the
        checksum written at its commit. **Returns** what was checked and each problem, by
        cycle and variable. `on_block(done, total)` reports progress."""
        names = checksum_names(self.layout)
        n, block = self.n_slots, int(self.attrs.get("cycle_block", 256))
        result = Verification(self.url)
        journal = read_journal(self._store)
        if journal is not None:
            span = f"{cycle_id(self.axis.point(journal.start))}…"
            span += cycle_id(self.axis.point(journal.start + journal.count - 1))
            result.notes.append(
                f"the rewrite of cycles {span} was interrupted after it was journaled: readers "
                "see the new versions, and the next writer completes it"
                if journal.complete
                else f"an unfinished rewrite journal of cycles {span}: the cycles keep their "
                "previous versions, and the next writer discards it"
            )
        has_sums = "checksum" in self._group
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            self._verify_block(lo, hi, names, has_sums, journal, result)
            if on_block is not None:
                on_block(hi, n)
        if not has_sums:
            result.notes.append("the store records no checksums (written before they were)")
        return result

    def _verify_block(self, lo, hi, names, has_sums, journal, result) -> None:
        def problem(i, name, what):
            result.problems.append((cycle_id(self.axis.point(i)), name, what))

        try:
            codes = np.asarray(self._group["status"][lo:hi])
        except Exception as err:
            for i in range(lo, hi):
                problem(i, "status", f"does not decode ({type(err).__name__})")
            return
        written = [lo + k for k in np.flatnonzero(codes != EMPTY)]
        if journal is not None and journal.complete:  # their journal is what readers see
            written = [i for i in written if not journal.covers(i)]
        if not written:
            return
        sums = None
        if has_sums:
            try:
                sums = np.asarray(self._group["checksum"][lo:hi])
            except Exception as err:
                for i in written:
                    problem(i, "checksum", f"does not decode ({type(err).__name__})")
        result.cycles += len(written)
        for j, name in enumerate(names):
            arr = self._group[name]
            rows = _read_rows(arr, lo, hi, written) if name != "status" else codes
            result.variables += len(written)
            for i in written:
                value = rows[i - lo] if name == "status" else rows.get(i)
                if isinstance(value, Exception):
                    problem(i, name, f"does not decode ({type(value).__name__}: {value})")
                elif sums is not None and sums[i - lo, j] != NOT_RECORDED:
                    result.summed += 1
                    if digest(value) != sums[i - lo, j]:
                        problem(i, name, _why_different(self._store, arr, name, i))

    def dataset(self) -> xr.Dataset:
        """The whole store as a lazy xarray Dataset (what `xarray.open_zarr` gives)."""
        return xr.open_zarr(self._store, zarr_format=3)


class Verification:
    """What `CycleStore.verify` found: `problems` as (cycle id, variable, what is wrong),
    counts of what it read and checked, and `notes` on the store's state."""

    def __init__(self, url):
        self.url = url
        self.problems: list[tuple[str, str, str]] = []
        self.notes: list[str] = []
        self.cycles = self.variables = self.summed = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_rows(arr, lo: int, hi: int, rows: list[int]) -> dict:
    """Rows `rows` of `arr[lo:hi]` in one read, or one by one (an error in place of each
    row that does not decode) when a chunk of them is damaged."""
    try:
        values = np.asarray(arr[lo:hi])
        return {i: values[i - lo] for i in rows}
    except Exception:
        out = {}
        for i in rows:
            try:
                out[i] = np.asarray(arr[i])
            except Exception as err:
                out[i] = err
        return out


def _why_different(store, arr, name: str, i: int) -> str:
    """A checksum mismatch: a missing chunk (read as fill values) or a changed one."""
    coords = (i // arr.chunks[0], *([0] * (arr.ndim - 1)))
    key = f"{name}/{arr.metadata.encode_chunk_key(coords)}"
    if not _exists(store, key):
        return f"does not match its checksum: its chunk {key} is missing"
    return f"does not match the checksum written at its commit (chunk {key})"


@contextlib.contextmanager
def quiet_consolidation():
    """Writing consolidated metadata (so `xarray.open_zarr(url)` opens in one read, without
    a warning) without zarr's note that consolidation is not yet in the v3 spec; xarray and
    zarr-python read it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def checksum_names(layout: StoreLayout) -> list[str]:
    """What the `checksum` array sums, in its order (`checksum_of`): the layout's
    variables and `status`."""
    return [*layout.variables(), "status"]


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


__all__ = ["CycleStore", "Verification", "checksum_names", "content_hash", "open_zarr_store"]
