"""What keeps a store from getting worse: per-cycle checksums and the rewrite journal.

- **Checksums.** Each cycle's commit records, beside `status`, a CRC-32 of every variable's
  values as written (and of its status code): the array `checksum (cycle, checksum_of)`,
  −1 where none was recorded. Reading a cycle back checks them; `CycleStore.verify` checks
  every written cycle. A changed or damaged chunk is found by the value it decodes to, so a
  chunk that decodes without error (a flipped byte, a missing chunk read as fill values) is
  found too.
- **The journal** (a redo log). Rewriting slots that already hold a cycle first writes the
  new values aside, into the Zarr group `vardax_journal`; its attribute `state` turns from
  `writing` to `complete` in one atomic put (the commit point); only then are the slots
  rewritten, and the journal removed. A crash before the commit point leaves the slots as
  they were (the next writer discards the journal); after it, readers of the store read the
  journaled cycles and the next writer rolls them forward. So every slot is always its old
  or its new cycle, never a mix and never lost.
"""

import asyncio
import zlib
from dataclasses import dataclass

import numpy as np
import zarr
import zarr.api.asynchronous

JOURNAL = "vardax_journal"
NOT_RECORDED = -1
_CHUNK_BYTES = 16 * 2**20  # journal arrays are chunked to about this size


def digest(values) -> int:
    """CRC-32 of one cycle's values of one variable, as the store holds them (strings as
    UTF-8, so fixed- and variable-width string arrays agree)."""
    values = np.asarray(values)
    if values.dtype.kind in "UOT":
        data = "\x1f".join(str(v) for v in values.ravel()).encode()
    else:
        data = np.ascontiguousarray(values).tobytes()
    return zlib.crc32(data)


def digests(arrays: dict[str, np.ndarray], statuses: np.ndarray, names: list[str]) -> np.ndarray:
    """The checksum rows `(count, len(names))` of `count` cycles (`names[-1]` is `status`)."""
    out = np.empty((len(statuses), len(names)), dtype="int64")
    for j, name in enumerate(names):
        values = statuses if name == "status" else arrays[name]
        for i in range(len(statuses)):
            out[i, j] = digest(values[i])
    return out


def _run(coro):
    return zarr.core.sync.sync(coro)


@dataclass(frozen=True)
class Journal:
    """A journaled rewrite of `count` cycles from slot `start`."""

    start: int
    count: int
    complete: bool
    group: "zarr.Group"

    def covers(self, i: int) -> bool:
        return self.complete and self.start <= i < self.start + self.count

    def statuses(self) -> np.ndarray:
        return np.asarray(self.group["status"][:], dtype="int8")

    def read(self, name: str, rows=slice(None)) -> np.ndarray:
        return np.asarray(self.group[name][rows])


def read_journal(store) -> Journal | None:
    """The journal of a store, or None; leftovers of a removed journal are swept by
    `discard_journal`."""
    if not _run(store.exists(f"{JOURNAL}/zarr.json")):
        return None
    group = zarr.open_group(store, path=JOURNAL, mode="r", zarr_format=3, use_consolidated=False)
    attrs = dict(group.attrs)
    return Journal(
        int(attrs.get("start", 0)),
        int(attrs.get("count", 0)),
        attrs.get("state") == "complete",
        group,
    )


def write_journal(store, start: int, arrays: dict[str, np.ndarray], statuses, checksums) -> None:
    """Writes the new values of slots `start …` aside; **returns** once they are committed
    to the journal (its `state` is `complete`)."""
    count = len(statuses)
    group = zarr.open_group(store, path=JOURNAL, mode="w", zarr_format=3)
    group.attrs.put({"state": "writing", "start": start, "count": count})
    columns = {**arrays, "status": np.asarray(statuses, dtype="int8")}
    if checksums is not None:
        columns["checksum"] = checksums
    columns = {name: np.asarray(values) for name, values in columns.items()}

    def create(name, values):
        text = values.dtype.kind in "UOT"
        row = 1 if text else max(1, values[0].nbytes)
        return zarr.api.asynchronous.create_array(
            store,
            name=f"{JOURNAL}/{name}",
            shape=values.shape,
            chunks=(max(1, min(count, _CHUNK_BYTES // row)), *values.shape[1:]),
            dtype=str if text else values.dtype,
        )

    async def write_all():  # every array made at once, then every array written at once
        made = await asyncio.gather(*(create(n, v) for n, v in columns.items()))
        await asyncio.gather(
            *(a.setitem(slice(None), v) for a, v in zip(made, columns.values(), strict=True))
        )

    _run(write_all())
    group.attrs.put({"state": "complete", "start": start, "count": count})


def discard_journal(store) -> None:
    """Removes the journal: its group metadata first (so it is gone in one delete), then
    the rest; also sweeps what an interrupted removal left."""
    _run(store.delete(f"{JOURNAL}/zarr.json"))
    _run(store.delete_dir(JOURNAL))


def journal_leftovers(store) -> bool:
    """Keys under the journal's folder without its metadata (an interrupted removal)."""

    async def any_key():
        async for _ in store.list_prefix(f"{JOURNAL}/"):
            return True
        return False

    return _run(any_key())


__all__ = [
    "JOURNAL",
    "NOT_RECORDED",
    "Journal",
    "digest",
    "digests",
    "discard_journal",
    "journal_leftovers",
    "read_journal",
    "write_journal",
]
