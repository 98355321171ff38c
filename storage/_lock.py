"""One writer at a time: a lock inside the store (owner, host, pid, heartbeat).

The lock is an empty Zarr group `vardax_lock` whose attributes hold the holder, so zarr and
xarray readers see a valid hierarchy. It is taken with the store's exclusive create of the
group's `zarr.json` (`set_if_not_exists`: an atomic link on local disks), then read back to
check the token, which also covers back ends that only emulate exclusive creation.
"""

import getpass
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass

import zarr
from zarr.core.buffer import default_buffer_prototype

from ._errors import StoreCorruptError, StoreError, StoreLockedError

logger = logging.getLogger("vardax.storage")

LOCK_GROUP = "vardax_lock"
LOCK_KEY = f"{LOCK_GROUP}/zarr.json"


@dataclass(frozen=True)
class LockInfo:
    token: str
    owner: str
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float

    def holder_is_dead(self) -> bool:
        """True when the holder was a process on this host that no longer runs (a writer
        killed by SIGKILL or a crash): its lock can be taken over safely."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def holder_is_alive_here(self) -> bool:
        """True when the holder is a process that runs on this host."""
        return self.host == socket.gethostname() and not self.holder_is_dead()

    def describe(self) -> str:
        age = time.time() - self.heartbeat_at
        return (
            f"{self.owner}@{self.host} pid {self.pid}, since "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.acquired_at))}, "
            f"last heartbeat {age:.0f} s ago"
        )


def _run(coro):
    return zarr.core.sync.sync(coro)


def _get(store: zarr.abc.store.Store, key: str) -> bytes | None:
    buf = _run(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _buffer(data: bytes):
    return default_buffer_prototype().buffer.from_bytes(data)


def _payload(info: LockInfo) -> bytes:
    group = {"zarr_format": 3, "node_type": "group", "attributes": {"vardax_lock": asdict(info)}}
    return json.dumps(group).encode()


def read_lock(store, where: str = "") -> LockInfo | None:
    """The lock's holder, or None; a damaged lock raises `StoreCorruptError` naming it."""
    raw = _get(store, LOCK_KEY)
    if raw is None:
        return None
    try:
        return LockInfo(**json.loads(raw)["attributes"]["vardax_lock"])
    except (ValueError, KeyError, TypeError) as err:
        where = where or "the store"
        raise StoreCorruptError(
            f"the writer lock of {where} ({LOCK_KEY}) is damaged ({type(err).__name__}: {err}): "
            f"if no writer runs, remove it with `vardax-cycle unlock {where}`"
        ) from None


def _delete(store) -> None:
    _run(store.delete_dir(LOCK_GROUP))


class StoreLock:
    """The writer lock of one store. `stale_after_s`: a heartbeat older than this marks the
    holder as presumably dead (it is still not broken without `break_lock`)."""

    def __init__(self, store, where: str, stale_after_s: float = 600.0):
        self.store, self.where, self.stale_after_s = store, where, stale_after_s
        self.info: LockInfo | None = None

    def acquire(self) -> LockInfo:
        """Takes the lock; a lock left by a dead process on this host is taken over (with
        its `*.partial` leftovers removed); a live holder raises `StoreLockedError`."""
        held = read_lock(self.store, self.where)
        if held is not None and held.holder_is_dead():
            logger.warning(
                "store %s: taking over the lock of a writer that is gone (%s)",
                self.where,
                held.describe(),
            )
            break_lock(self.store)
        now = time.time()
        info = LockInfo(
            uuid.uuid4().hex, getpass.getuser(), socket.gethostname(), os.getpid(), now, now
        )
        try:
            _run(self.store.set_if_not_exists(LOCK_KEY, _buffer(_payload(info))))
        except OSError as err:  # a full or read-only disk: nothing of the store was touched
            raise StoreError(
                f"store {self.where}: cannot take the writer lock "
                f"({err.strerror or err}); the store is as it was"
            ) from err
        held = read_lock(self.store, self.where)
        if held is None or held.token != info.token:
            stale = held is not None and time.time() - held.heartbeat_at > self.stale_after_s
            raise StoreLockedError(
                f"store {self.where} is locked by another writer: {held.describe() if held else '?'}"
                + (
                    f". Its heartbeat is older than {self.stale_after_s:.0f} s: if that process is "
                    f"gone, break the lock with `vardax-cycle unlock {self.where}`"
                    if stale
                    else ""
                )
            )
        self.info = info
        return info

    def heartbeat(self) -> None:
        if self.info is None:
            return
        held = read_lock(self.store, self.where)
        if held is None or held.token != self.info.token:
            raise StoreLockedError(f"store {self.where}: this writer lost its lock (it was broken)")
        self.info = LockInfo(**(asdict(self.info) | {"heartbeat_at": time.time()}))
        _run(self.store.set(LOCK_KEY, _buffer(_payload(self.info))))

    def release(self) -> None:
        if self.info is None:
            return
        held = read_lock(self.store)
        if held is not None and held.token == self.info.token:
            _delete(self.store)
        self.info = None


def break_lock(store) -> LockInfo | None:
    """Removes the lock whoever holds it, and the temporary `*.partial` files a writer killed
    mid-write leaves on a local disk (its atomic writes' unfinished halves, never read);
    **returns** the lock it held (None for none, or a damaged one)."""
    try:
        held = read_lock(store)
    except StoreCorruptError:
        held = None
    _delete(store)

    async def partials():
        return [key async for key in store.list() if key.endswith(".partial")]

    for key in _run(partials()):
        _run(store.delete(key))
    return held


__all__ = ["LOCK_KEY", "LockInfo", "StoreLock", "break_lock", "read_lock"]
