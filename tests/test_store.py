"""The cycle store on a real Zarr store on disk (and in memory)."""

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _store_helpers import INTERVAL, LAYOUT, ORIGIN, chunk_bytes, cycle_data

import storage as st

ROOT = Path(__file__).resolve().parents[1]


def point(k: int) -> pd.Timestamp:
    return pd.Timestamp("2026-01-01T00:00") + k * pd.Timedelta("6h")


@pytest.fixture
def store(tmp_path):
    s = st.CycleStore.create(
        tmp_path / "exp.zarr", LAYOUT, ORIGIN, INTERVAL, experiment="t", config_text="x: 1", block=4
    )
    yield s
    s.close()


def test_roundtrip_and_plain_xarray(store, tmp_path):
    for k in (0, 1, 2):
        store.write_cycle(point(k), cycle_data(k), "committed")
    store.write_cycle(point(3), cycle_data(3), "degraded")
    got = store.read_cycle(point(1))
    for name, value in cycle_data(1).items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(tmp_path / "exp.zarr")
    assert ds.cycle.values[2] == np.datetime64("2026-01-01T12:00")
    assert list(ds.window_time.values) == list(pd.to_timedelta([0, 3, 6], unit="h").values)
    assert ds.status.attrs["flag_meanings"].split() == list(st.STATUS)
    assert [st.STATUS[c] for c in ds.status.values] == ["committed"] * 3 + ["degraded"]
    np.testing.assert_array_equal(
        ds.analysis.sel(cycle="2026-01-01T06:00").values, cycle_data(1)["analysis"]
    )
    assert ds.attrs["cycle_interval"] == "PT6H" and ds.attrs["config_text"] == "x: 1"
    assert ds.obs_source.values[2] == "file2.csv"


def test_queries(store):
    for k in (0, 1, 3):
        store.write_cycle(point(k), cycle_data(k))
    store.mark(point(4), "skipped")
    store.mark(point(5), "failed")
    assert store.first_not_committed(point(0), point(9)) == point(2)
    assert store.first_not_committed(point(0), point(1)) is None
    assert store.first_not_committed(point(4), point(20)) == point(5)
    assert store.last_committed() == point(4)
    assert store.committed_cycles() == [point(0), point(1), point(3), point(4)]
    table = store.status_table(point(0), point(5))
    assert list(table.status) == [
        "committed",
        "committed",
        "empty",
        "committed",
        "skipped",
        "failed",
    ]
    assert list(table.cycle_id[:2]) == ["20260101T0000Z", "20260101T0600Z"]
    assert table.iterations.iloc[3] == 8
    with pytest.raises(st.CycleError, match="cycle 20260101T1200Z in .* is empty, not committed"):
        store.read_cycle(point(2))


def test_growth_and_bad_cycle_points(store):
    assert store.n_slots == 4
    store.write_cycle(point(9), cycle_data(9))
    assert store.n_slots == 12
    np.testing.assert_array_equal(store.read_cycle(point(9))["analysis"], cycle_data(9)["analysis"])
    ds = store.dataset()
    assert ds.sizes["cycle"] == 12 and ds.cycle.values[11] == np.datetime64(point(11))
    with pytest.raises(
        st.CycleError,
        match="cycle 2025-12-31T18:00Z is before the store's origin 2026-01-01T00:00Z",
    ):
        store.write_cycle("2025-12-31T18:00Z", cycle_data(0))
    with pytest.raises(st.CycleError, match="not on the store's cycle grid"):
        store.write_cycle("2026-01-01T03:00Z", cycle_data(0))


def test_bad_data_is_named(store):
    bad = cycle_data(0) | {"analysis": np.zeros((3, 7))}
    with pytest.raises(
        st.StoreError,
        match=r"cycle 20260101T0600Z: variable 'analysis' has shape \(1, 3, 7\), the store expects \(1, 3, 8\)",
    ):
        store.write_cycle(point(1), bad)
    with pytest.raises(st.StoreError, match=r"unknown variables \['analyses'\]"):
        store.write_cycle(point(1), {"analyses": np.zeros((3, 8))})
    with pytest.raises(
        st.StoreError, match="variable 'iterations' has dtype float64, the store holds int32"
    ):
        store.write_cycle(point(1), {"iterations": 2.5})
    with pytest.raises(st.StoreError, match="unknown cycle status 'done'"):
        store.write_cycle(point(1), cycle_data(1), "done")
    assert store.status_of(point(1)) == "empty"


def test_rewrite_is_idempotent_and_backfill_touches_only_its_slots(tmp_path, store):
    for k in (5, 2, 9, 0):  # out of order, with growth
        store.write_cycle(point(k), cycle_data(k))
    before = chunk_bytes(tmp_path / "exp.zarr")
    store.write_cycle(point(2), cycle_data(2))  # re-run: same inputs, same bytes
    assert chunk_bytes(tmp_path / "exp.zarr") == before
    store.write_cycle(point(3), cycle_data(3))  # backfill a gap
    after = chunk_bytes(tmp_path / "exp.zarr")
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # block chunks hold slots 0-3 (the checksums' too)
    per_cycle = {k for k in changed if not k.endswith("/c/0") and not k.startswith("checksum/")}
    assert all(k.split("/")[-3] == "3" for k in per_cycle), per_cycle
    for k in (0, 2, 5, 9):
        for name, value in cycle_data(k).items():
            np.testing.assert_array_equal(store.read_cycle(point(k))[name], value)


def test_opening_checks_the_layout_and_config(store, tmp_path):
    store.close()
    other = st.StoreLayout(
        state_dims=(("site", 40),),
        window_offsets_s=(0, 10800, 21600),
        lead_offsets_s=(0, 21600),
        obs_size=4,
    )
    with pytest.raises(
        st.StoreMismatchError,
        match=r"state_dims: store has \(\('site', 8\),\), expected \(\('site', 40\),\)",
    ):
        st.CycleStore.open(tmp_path / "exp.zarr", layout=other)
    with pytest.raises(st.StoreMismatchError, match="x: store has 1, this config 2"):
        st.CycleStore.open(tmp_path / "exp.zarr", config_text="x: 2")
    # a config key that changes the layout is named once, as the key (the cause)
    with pytest.raises(st.StoreMismatchError) as err:
        st.CycleStore.open(tmp_path / "exp.zarr", layout=other, config_text="x: 2")
    assert "x: store has 1, this config 2" in str(err.value)
    assert "state_dims" not in str(err.value)
    with pytest.raises(
        st.StoreMismatchError,
        match="cycles from 2026-01-01T00:00Z every 0 days 06:00:00, expected .* every 0 days 12:00:00",
    ):
        st.CycleStore.open_or_create(
            tmp_path / "exp.zarr", LAYOUT, ORIGIN, "PT12H", config_text="x: 1"
        )
    with pytest.raises(st.StoreError, match="no store at"):
        st.CycleStore.open(tmp_path / "missing.zarr")
    with pytest.raises(st.StoreError, match="a store already exists"):
        st.CycleStore.create(tmp_path / "exp.zarr", LAYOUT, ORIGIN, INTERVAL)
    with st.CycleStore.open(tmp_path / "exp.zarr", layout=LAYOUT, config_text="x: 1") as reader:
        with pytest.raises(st.StoreError, match="open it with mode='a' to write"):
            reader.write_cycle(point(0), cycle_data(0))


def test_second_writer_refused_nothing_lost(store, tmp_path):
    store.write_cycle(point(0), cycle_data(0))
    with pytest.raises(st.StoreLockedError, match=r"locked by another writer: .*@.* pid \d+"):
        st.CycleStore.open(tmp_path / "exp.zarr", mode="a")
    reader = st.CycleStore.open(tmp_path / "exp.zarr")  # readers need no lock
    np.testing.assert_array_equal(
        reader.read_cycle(point(0))["analysis"], cycle_data(0)["analysis"]
    )
    store.write_cycle(point(1), cycle_data(1))  # the holder goes on writing
    store.close()
    with st.CycleStore.open(tmp_path / "exp.zarr", mode="a") as second:
        second.write_cycle(point(2), cycle_data(2))
        assert second.committed_cycles() == [point(0), point(1), point(2)]


def test_stale_lock_is_named_and_broken_explicitly(store, tmp_path):
    holder = store.lock_holder()
    with pytest.raises(st.StoreLockedError, match="heartbeat is older than 0 s.*break the lock"):
        st.CycleStore.open(tmp_path / "exp.zarr", mode="a", stale_after_s=0.0)
    broken = st.CycleStore.break_lock(tmp_path / "exp.zarr")
    assert broken.pid == holder.pid == os.getpid()
    with pytest.raises(st.StoreLockedError, match="lost its lock"):
        store.write_cycle(point(0), cycle_data(0))


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import storage as st
    from _store_helpers import cycle_data
    kill_after = int(sys.argv[2])
    written = []
    def hook(name):
        written.append(name)
        if len(written) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    s = st.CycleStore.open(sys.argv[1], mode="a")
    s.write_cycle("2026-01-01T06:00Z", cycle_data(1), "committed", on_variable_written=hook)
    """
)


@pytest.mark.parametrize("kill_after", [1, 4, 12])
def test_sigkill_mid_rerun_leaves_the_new_cycle_journaled(tmp_path, kill_after):
    """A writer SIGKILLed after some but not all variables of a rerun's cycle reached its
    slot: readers see the new cycle (from the journal), the next writer completes the
    rewrite, and the store's bytes are an uninterrupted write's."""
    clean = tmp_path / "clean.zarr"
    crashed = tmp_path / "crashed.zarr"
    for url in (clean, crashed):
        with st.CycleStore.create(url, LAYOUT, ORIGIN, INTERVAL, block=4) as s:
            s.write_cycle(point(0), cycle_data(0))
            s.write_cycle(point(1), cycle_data(1 if url == clean else 7))
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD.format(tests=str(Path(__file__).parent)),
            str(crashed),
            str(kill_after),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    reader = st.CycleStore.open(crashed)
    assert reader.status_of(point(1)) == "committed"
    assert reader.committed_cycles() == [point(0), point(1)]
    for name, value in cycle_data(1).items():
        np.testing.assert_array_equal(reader.read_cycle(point(1))[name], value)
    assert "pid" in reader.lock_holder().describe()  # the dead writer's lock remains
    assert reader.lock_holder().holder_is_dead()
    # the next writer on this host takes the dead writer's lock over, sweeps its leftovers
    # and completes the rewrite
    with st.CycleStore.open(crashed, mode="a") as s:
        assert not list(crashed.rglob("*.partial"))
        assert not (crashed / "vardax_journal").exists()
    assert chunk_bytes(crashed) == chunk_bytes(clean)
    assert st.CycleStore.open(crashed).verify().ok


def test_memory_and_file_urls(tmp_path):
    for url in (f"memory://vardax-test/{os.getpid()}/exp.zarr", f"file://{tmp_path}/exp.zarr"):
        with st.CycleStore.create(url, LAYOUT, ORIGIN, INTERVAL, block=4) as s:
            s.write_cycle(point(6), cycle_data(6))
        reader = st.CycleStore.open(url)
        np.testing.assert_array_equal(
            reader.read_cycle(point(6))["forecast"], cycle_data(6)["forecast"]
        )
        assert reader.dataset().sizes["cycle"] == 8


def test_fields_chunked_by_several_cycles(tmp_path):
    """`field_chunk`: fewer objects for block writes; single-cycle writes and gaps still
    behave (a cycle rewrite keeps its neighbours in the same chunk)."""
    url = tmp_path / "chunked.zarr"
    with pytest.raises(st.StoreError, match="field_chunk must be >= 1 and divide block"):
        st.CycleStore.create(url, LAYOUT, ORIGIN, INTERVAL, block=8, field_chunk=3)
    with st.CycleStore.create(url, LAYOUT, ORIGIN, INTERVAL, block=8, field_chunk=4) as s:
        s.write_cycles(
            point(0),
            {k: np.stack([cycle_data(i)[k] for i in range(6)]) for k in cycle_data(0)},
            "committed",
        )
        s.write_cycle(point(2), cycle_data(12), "degraded")  # a rewrite inside a chunk
        s.write_cycle(point(9), cycle_data(9))  # growth
    ds = xr.open_zarr(url)
    assert ds.analysis.encoding["chunks"][0] == 4
    np.testing.assert_array_equal(ds.analysis.values[1], cycle_data(1)["analysis"])
    np.testing.assert_array_equal(ds.analysis.values[2], cycle_data(12)["analysis"])
    np.testing.assert_array_equal(ds.analysis.values[3], cycle_data(3)["analysis"])
    reader = st.CycleStore.open(url)
    assert [str(x) for x in reader.status_table()["status"].iloc[:10]] == (
        ["committed"] * 2 + ["degraded"] + ["committed"] * 3 + ["empty"] * 3 + ["committed"]
    )
    assert len(list((url / "analysis" / "c").iterdir())) == 3  # chunks 0–3, 4–7, 8–11


def test_the_writer_reads_its_last_cycle_as_the_store_holds_it(tmp_path):
    """The writer keeps the cycle it wrote last in memory (the next cycle starts from it): what
    it reads equals, in values and dtypes, what a fresh reader of the store gets — for a
    float32 layout, variables left out (fill values), and after a rewrite or a `mark`."""
    import dataclasses

    layout = dataclasses.replace(LAYOUT, dtype="float32")
    url = tmp_path / "f32.zarr"
    w = st.CycleStore.create(url, layout, ORIGIN, INTERVAL, config_text="x: 1", block=4)
    partial = {k: v for k, v in cycle_data(1).items() if k not in ("forecast", "cost_after")}
    w.write_cycle(point(0), cycle_data(0), "committed")
    w.write_cycle(point(1), partial, "degraded")

    def same_as_a_reader(k):
        mine = w.read_cycle(point(k), require_done=False)
        theirs = st.CycleStore.open(url).read_cycle(point(k), require_done=False)
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert mine[name].dtype == theirs[name].dtype, name
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
        assert w.status_of(point(k)) == st.CycleStore.open(url).status_of(point(k))
        return mine

    assert same_as_a_reader(1)["analysis"].dtype == np.float32
    assert np.isnan(same_as_a_reader(1)["cost_after"])
    same_as_a_reader(0)
    got = w.read_cycle(point(1), require_done=False)
    got["analysis"][:] = 0  # a copy: the kept cycle is not changed through it
    assert not np.all(w.read_cycle(point(1))["analysis"] == 0)
    w.write_cycle(point(1), cycle_data(5), "committed")
    want = cycle_data(5)["analysis"].astype("float32")
    np.testing.assert_array_equal(same_as_a_reader(1)["analysis"], want)
    w.mark(point(1), "skipped")
    assert same_as_a_reader(1)["status"] == "skipped"
    w.close()


def test_a_science_mismatch_names_each_key_with_both_values(tmp_path):
    made = "method: {name: 3dvar, minimiser: bfgs}\nmodel: {name: lorenz96, K: 40}\n"
    st.CycleStore.create(tmp_path / "s.zarr", LAYOUT, ORIGIN, INTERVAL, config_text=made)
    other = "method: {name: 3dvar, minimiser: gauss_newton}\nmodel: {name: lorenz96, K: 40, F: 9}\n"
    with pytest.raises(st.StoreMismatchError) as err:
        st.CycleStore.open(tmp_path / "s.zarr", config_text=other)
    message = str(err.value)
    assert "method.minimiser: store has bfgs, this config gauss_newton" in message
    assert "model.F: store has the default, this config 9" in message
    assert "model.K" not in message and "config_hash" not in message
    st.CycleStore.create(tmp_path / "t.zarr", LAYOUT, ORIGIN, INTERVAL, config_text="[not: yaml")
    with pytest.raises(st.StoreMismatchError, match="config_hash: store has"):
        st.CycleStore.open(tmp_path / "t.zarr", config_text=other)  # nothing to compare: hashes
