"""Faults of the store: a crash or a full disk at any chunk put, damaged chunks, damaged and
stale locks, interrupted creation, a store URL that is not a store. Each case checks that
the store never gets worse: every cycle is its old or its new version, and what is
damaged is named by cycle and variable."""

import errno
import os
import shutil
import socket
import subprocess
import uuid

import numpy as np
import pandas as pd
import pytest
import zarr
import zarr.storage
from _store_helpers import INTERVAL, LAYOUT, ORIGIN, cycle_data
from typer.testing import CliRunner

import storage as st
import storage._store as store_module
from flows.cli import app


def point(k: int) -> pd.Timestamp:
    return pd.Timestamp("2026-01-01T00:00") + k * pd.Timedelta("6h")


class Faulty(zarr.storage.WrapperStore):
    """A store whose `n`-th write (put or delete) after `arm()` fails: with `OSError(ENOSPC)`
    once (a full disk), or, `dead=True`, with every operation from then on (a crash)."""

    def __init__(self, store, fail_at=None, dead=False):
        super().__init__(store)
        self.fail_at, self.dead, self.writes, self.armed, self.down = fail_at, dead, 0, False, False
        self.keys = []  # the keys written since arm(), in order

    def arm(self):
        self.armed, self.writes, self.keys = True, 0, []

    def _check(self, write: bool, key: str = ""):
        if self.down:
            raise OSError(errno.EIO, "the writer is gone")
        if write and self.armed:
            self.writes += 1
            self.keys.append(key)
            if self.writes == self.fail_at:
                self.down = self.dead
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async def set(self, key, value):
        self._check(True, key)
        await super().set(key, value)

    async def set_if_not_exists(self, key, value):
        if await self._store.exists(key):
            return  # a no-op (zarr's parents of a new array), not a put
        self._check(True, key)
        await super().set_if_not_exists(key, value)

    async def delete(self, key):
        self._check(True, key)
        await super().delete(key)

    async def get(self, *args, **kw):
        self._check(False)
        return await super().get(*args, **kw)

    async def exists(self, key):
        self._check(False)
        return await super().exists(key)


def _base(root, n=4, field_chunk=1):
    url = root / "base.zarr"
    with st.CycleStore.create(
        url, LAYOUT, ORIGIN, INTERVAL, block=4, field_chunk=field_chunk, config_text="x: 1"
    ) as s:
        for k in range(n):
            s.write_cycle(point(k), cycle_data(k))
    return url


def _same(got: dict, want: dict) -> bool:
    def equal(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f":
            return np.array_equal(a, b, equal_nan=True)
        return a.shape == b.shape and [str(x) for x in a.ravel()] == [str(x) for x in b.ravel()]

    return all(equal(got[k], v) for k, v in want.items())


def _injected(monkeypatch, fail_at, dead, armed=False):
    """Every store opened from now on is `Faulty` (already armed, with `armed`)."""
    made = []

    def open_store(url, storage_options=None, read_only=False):
        store = Faulty(zarr.storage.LocalStore(str(url), read_only=read_only), fail_at, dead)
        if armed and not read_only:
            store.arm()
        made.append(store)
        return store

    monkeypatch.setattr(store_module, "open_zarr_store", open_store)
    return made


# (what is written: first cycle, cycles, data of each) — a rerun, a fresh cycle, a block
# rerun over done and empty slots with fields chunked by two cycles; and after which puts
# to crash (1: every one)
WRITES = {
    "rerun": (1, [cycle_data(11)], 1, 1),
    "fresh": (4, [cycle_data(4)], 1, 9),
    "block": (2, [cycle_data(12), cycle_data(13), cycle_data(14)], 2, 15),
}


def _write(s, first, rows):
    data = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    s.write_cycles(point(first), data, "committed")


def _puts(tmp_path, monkeypatch, first, rows, field_chunk):
    url = shutil.copytree(_base(tmp_path / "count", field_chunk=field_chunk), tmp_path / "n.zarr")
    made = _injected(monkeypatch, None, False)
    with st.CycleStore.open(url, mode="a") as s:
        made[-1].arm()
        _write(s, first, rows)
        keys = made[-1].keys
    monkeypatch.undo()
    return keys


def _crash_points(keys, every):
    """The puts (1-based) to crash after: every `every`-th, the first and last few, and each
    put of a group's metadata (the journal's state, the commit point) with its neighbours."""
    n = len(keys)
    points = {*range(1, min(n, 3) + 1), *range(max(1, n - 3), n + 1), *range(every, n + 1, every)}
    for i, key in enumerate(keys, start=1):
        if key.endswith("vardax_journal/zarr.json") or key.startswith("status/c"):
            points |= {j for j in (i - 1, i, i + 1) if 1 <= j <= n}
    return sorted(points)


@pytest.mark.parametrize("kind", WRITES)
def test_a_crash_after_any_chunk_put_leaves_each_cycle_old_or_new(tmp_path, monkeypatch, kind):
    first, rows, field_chunk, every = WRITES[kind]
    base = _base(tmp_path, field_chunk=field_chunk)
    old = {k: (cycle_data(k) if k < 4 else None) for k in range(first, first + len(rows))}
    keys = _puts(tmp_path, monkeypatch, first, rows, field_chunk)
    assert len(keys) >= 4
    seen = set()
    for k in _crash_points(keys, every):
        url = shutil.copytree(base, tmp_path / f"crash{k}.zarr")
        made = _injected(monkeypatch, k, dead=True)
        s = st.CycleStore.open(url, mode="a")
        made[-1].arm()
        try:  # a crash once the write is committed (removing the journal) is not its failure
            _write(s, first, rows)
        except st.StoreError as err:
            assert "cycle" in str(err), err
        monkeypatch.undo()
        st.CycleStore.break_lock(url)  # the crashed writer is gone
        versions = []
        for reader_mode in ("r", "a"):  # as readers see it, then after the next writer opened
            with st.CycleStore.open(url, mode=reader_mode) as r:
                for j, new in enumerate(rows):
                    i = first + j
                    if r.status_of(point(i)) == "empty":
                        assert old[i] is None, f"put {k}: cycle {i} lost"
                        versions.append("old")
                        continue
                    got = r.read_cycle(point(i))
                    which = "new" if _same(got, new) else "old" if _same(got, old[i]) else "mix"
                    assert which != "mix", f"put {k}: cycle {i} is neither its old nor new version"
                    versions.append(which)
                if reader_mode == "r":  # the others, once (verify checks them after)
                    for i in set(range(4)) - set(old):
                        assert _same(r.read_cycle(point(i)), cycle_data(i)), f"put {k}: {i}"
        half = len(versions) // 2
        assert versions[:half] == versions[half:], f"put {k}: rolling forward changed {versions}"
        assert len(set(versions[:half])) == 1, f"put {k}: the cycles of one write disagree"
        assert st.CycleStore.open(url).verify().ok
        assert not (url / "vardax_journal").exists()
        seen.add(versions[0])
    # a fresh cycle's last put is its status: a crash before it leaves the cycle to run
    assert seen == ({"old"} if kind == "fresh" else {"old", "new"})


@pytest.mark.parametrize("at", ["first", "last"])
def test_a_full_disk_during_a_rerun_is_named_and_loses_nothing(tmp_path, monkeypatch, at):
    base = _base(tmp_path)
    n = len(_puts(tmp_path, monkeypatch, 1, [cycle_data(11)], 1))
    made = _injected(monkeypatch, 1 if at == "first" else n - 1, dead=False)
    with st.CycleStore.open(base, mode="a") as s:
        made[-1].arm()
        with pytest.raises(st.StoreError) as err:
            s.write_cycle(point(1), cycle_data(11))
    monkeypatch.undo()
    message = str(err.value)
    assert err.value.exit_code == 4
    assert "cycle 20260101T0600Z" in message and "No space left on device" in message
    want = cycle_data(1) if at == "first" else cycle_data(11)
    assert ("as it was" in message) == (at == "first")
    assert ("journaled" in message) == (at == "last")
    with st.CycleStore.open(base, mode="a") as s:  # the next writer completes it
        assert _same(s.read_cycle(point(1)), want)
        for k in (0, 2, 3):
            assert _same(s.read_cycle(point(k)), cycle_data(k))
    assert st.CycleStore.open(base).verify().ok


def test_a_full_disk_during_a_first_write_leaves_the_cycle_to_run(tmp_path, monkeypatch):
    base = _base(tmp_path)
    made = _injected(monkeypatch, 2, dead=False)
    with st.CycleStore.open(base, mode="a") as s:
        made[-1].arm()
        with pytest.raises(st.StoreError, match="still to run|as they were"):
            s.write_cycle(point(4), cycle_data(4))
    monkeypatch.undo()
    r = st.CycleStore.open(base)
    assert r.status_of(point(4)) == "empty" and r.committed_cycles() == [point(k) for k in range(4)]
    assert r.verify().ok


def test_an_interrupted_creation_is_named_and_recreated(tmp_path, monkeypatch):
    url = tmp_path / "s.zarr"
    made = _injected(monkeypatch, 5, dead=False)
    original = Faulty.__init__

    def armed(self, *a, **kw):
        original(self, *a, **kw)
        self.arm()

    monkeypatch.setattr(Faulty, "__init__", armed)
    with pytest.raises(st.StoreError, match="creating store .*No space left.*holds no cycle"):
        st.CycleStore.create(url, LAYOUT, ORIGIN, INTERVAL, block=4)
    assert made
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["status", str(url)], terminal_width=200)
    assert result.exit_code == 4 and "creation of store" in result.output, result.output
    with st.CycleStore.open_or_create(url, LAYOUT, ORIGIN, INTERVAL, block=4) as s:
        s.write_cycle(point(0), cycle_data(0))
    assert st.CycleStore.open(url).verify().ok


def test_a_store_is_created_only_where_nothing_else_is(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(st.StoreMismatchError, match="is a file"):
        st.CycleStore.open_or_create(a_file, LAYOUT, ORIGIN, INTERVAL)
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "thesis.tex").write_text("mine")
    with pytest.raises(st.StoreMismatchError, match=r"among other files \(thesis.tex\)"):
        st.CycleStore.create(folder, LAYOUT, ORIGIN, INTERVAL)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
    assert a_file.read_text() == "mine"
    result = CliRunner().invoke(app, ["status", str(a_file)], terminal_width=200)
    assert result.exit_code == 2 and "is a file" in result.output


def _chunk(url, name, k):
    return url / name / "c" / str(k) / "0" / "0"


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_verify_and_reads_name_a_damaged_chunk(tmp_path, damage):
    url = _base(tmp_path)
    chunk = _chunk(url, "analysis", 2)
    raw = chunk.read_bytes()
    if damage == "truncated":
        chunk.write_bytes(raw[: len(raw) // 2])
    elif damage == "flipped":
        chunk.write_bytes(raw[:-9] + bytes([raw[-9] ^ 0x10]) + raw[-8:])
    else:
        chunk.unlink()
    result = CliRunner().invoke(app, ["verify", str(url)], terminal_width=300)
    assert result.exit_code == 4, result.output
    assert "20260101T1200Z" in result.output and "analysis" in result.output
    assert "20260101T0600Z" not in result.output  # only the damaged cycle
    if damage == "missing":
        assert "missing" in result.output
    with pytest.raises(st.StoreCorruptError, match=r"cycle 20260101T1200Z.*analysis.*--rerun"):
        st.CycleStore.open(url).read_cycle(point(2))
    assert _same(st.CycleStore.open(url).read_cycle(point(1)), cycle_data(1))
    with st.CycleStore.open(url, mode="a") as s:  # the rerun it asks for repairs it
        s.write_cycle(point(2), cycle_data(2))
    result = CliRunner().invoke(app, ["verify", str(url)], terminal_width=300)
    assert result.exit_code == 0 and "checksums match" in result.output, result.output


def test_a_damaged_status_chunk_is_named(tmp_path):
    url = _base(tmp_path)
    chunk = url / "status" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:3])
    result = CliRunner().invoke(app, ["status", str(url)], terminal_width=300)
    assert result.exit_code == 4 and "status array is unreadable" in result.output
    result = CliRunner().invoke(app, ["verify", str(url)], terminal_width=300)
    assert result.exit_code == 4 and "status" in result.output and "20260101T0000Z" in result.output


def _lock_of(url, host, pid):
    lock = url / "vardax_lock" / "zarr.json"
    lock.parent.mkdir(exist_ok=True)
    info = {"token": uuid.uuid4().hex, "owner": "ops", "host": host, "pid": pid}
    info |= {"acquired_at": 0.0, "heartbeat_at": 0.0}
    import json

    lock.write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"vardax_lock": info}})
    )
    return lock


def test_a_damaged_lock_is_named_and_unlock_removes_it(tmp_path):
    url = _base(tmp_path)
    before = st.CycleStore.open(url).read_cycle(point(3))
    (url / "vardax_lock").mkdir()
    (url / "vardax_lock" / "zarr.json").write_text('{"zarr_format": 3, "attri')
    with pytest.raises(st.StoreCorruptError, match="vardax_lock/zarr.json.*is damaged.*unlock"):
        st.CycleStore.open(url, mode="a")
    result = CliRunner().invoke(app, ["unlock", str(url), "--yes"], terminal_width=300)
    assert result.exit_code == 0 and "broken" in result.output, result.output
    with st.CycleStore.open(url, mode="a") as s:
        assert _same(s.read_cycle(point(3)), before)


def test_unlock_shows_the_holder_asks_and_refuses_a_live_one(tmp_path):
    url = _base(tmp_path)
    lock = _lock_of(url, "elsewhere", 4242)
    result = CliRunner().invoke(app, ["unlock", str(url)], input="n\n", terminal_width=300)
    assert result.exit_code == 3 and "ops@elsewhere pid 4242" in result.output
    assert lock.exists()
    with pytest.raises(st.StoreLockedError, match="vardax-cycle unlock"):
        st.CycleStore.open(url, mode="a", stale_after_s=1.0)
    result = CliRunner().invoke(app, ["unlock", str(url)], input="y\n", terminal_width=300)
    assert result.exit_code == 0 and not lock.exists()
    _lock_of(url, socket.gethostname(), os.getpid())  # a live holder here: never broken
    result = CliRunner().invoke(app, ["unlock", str(url), "--yes"], terminal_width=300)
    assert result.exit_code == 3 and "still runs" in result.output
    result = CliRunner().invoke(app, ["unlock", str(tmp_path / "none.zarr")], terminal_width=300)
    assert result.exit_code == 2 and "no store at" in result.output


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (a real full disk), where the machine lets this process mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()} (the "
            "injected ENOSPC tests cover a full disk)"
        )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk):
    with open(disk / "filler", "wb", buffering=0) as f:  # nothing left to flush at close
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_real_full_disk_during_a_rerun_and_a_creation(small_disk):
    url = small_disk / "s.zarr"
    with st.CycleStore.create(url, LAYOUT, ORIGIN, INTERVAL, block=4) as s:
        for k in range(3):
            s.write_cycle(point(k), cycle_data(k))
    with st.CycleStore.open(url, mode="a") as s:
        _fill(small_disk)
        with pytest.raises(st.StoreError, match="No space left on device"):
            s.write_cycle(point(1), cycle_data(11))
    with pytest.raises(st.StoreError, match="No space left on device"):
        st.CycleStore.create(small_disk / "new.zarr", LAYOUT, ORIGIN, INTERVAL, block=4)
    (small_disk / "filler").unlink()
    with st.CycleStore.open(url, mode="a") as s:
        got = s.read_cycle(point(1))
        assert _same(got, cycle_data(1)) or _same(got, cycle_data(11))
        for k in (0, 2):
            assert _same(s.read_cycle(point(k)), cycle_data(k))
    assert st.CycleStore.open(url).verify().ok
    with st.CycleStore.open_or_create(small_disk / "new.zarr", LAYOUT, ORIGIN, INTERVAL, block=4):
        pass


def test_a_full_disk_in_a_cli_rerun_exits_4_and_the_cycles_stay(prefect_api, tmp_path, monkeypatch):
    """End to end: `backfill --rerun` through the flows while the disk fills up mid-journal
    exits 4 naming the cycle and the store; every variable of every cycle is as it was, and
    the next rerun completes."""
    from _pipeline_helpers import experiment_config, store_arrays

    import tasks
    from flows import _flows

    cfg = experiment_config(tmp_path, "l96-3dvar", experiment="full-disk")
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 3, 0)
    _flows.cycling_flow(str(cfg), end=exp.axis.cycle(2).id, block=3)
    before = store_arrays(exp.store_url, 3)
    _injected(monkeypatch, fail_at=12, dead=False, armed=True)  # in the first cycle's journal
    args = ["backfill", str(cfg), "--start", exp.axis.cycle(0).id, "--end", exp.axis.cycle(2).id]
    result = CliRunner().invoke(app, [*args, "--rerun"], terminal_width=300)
    monkeypatch.undo()
    said = " ".join(result.output.split())
    assert result.exit_code == 4, result.output
    assert "No space left on device" in said and exp.axis.cycle(0).id in said
    assert "as it was" in said and "Traceback" not in said
    after = store_arrays(exp.store_url, 3)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    result = CliRunner().invoke(app, [*args, "--rerun"], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert st.CycleStore.open(exp.store_url).verify().ok
