"""The cycle on Prefect (a real API server, the test harness) into a real Zarr store:
it reproduces the pure-JAX loop, block mode equals cycle by cycle, backfill fills gaps,
the gate handles a divergent analysis by its policy, an empty window is forecast-only."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _pipeline_helpers import (
    experiment_config,
    run_cycle_by_cycle_and_in_blocks,
    store_arrays,
    window_end_rmse,
)

import storage
import tasks
from flows import _flows

N = 16


@pytest.fixture(scope="module")
def l96_runs(prefect_api, tmp_path_factory):
    """One OSSE of l96-4dvar, run cycle by cycle and in blocks (into two stores)."""
    # block mode, with blocks of 6: two whole blocks and a partial one
    return run_cycle_by_cycle_and_in_blocks(
        tmp_path_factory.mktemp("l96"), "l96-4dvar", N, 6, experiment="pipe-l96"
    )


def test_pipeline_reproduces_the_pure_jax_loop(l96_runs):
    per_cycle, _, out, _ = l96_runs
    assert out["statuses"] == {"committed": N}
    exp = tasks.experiment(per_cycle)
    ref = tasks.reference_scores(str(per_cycle), N)
    rmse = window_end_rmse(exp.store_url, exp.truth_url, N)
    assert abs(rmse - ref["analysis"]) <= 1e-6
    assert rmse < ref["background"]
    stored = store_arrays(exp.store_url, N)
    np.testing.assert_allclose(stored["analysis"], np.asarray(ref["output"].accepted), atol=1e-10)
    np.testing.assert_allclose(
        stored["background"], np.asarray(ref["output"].background), atol=1e-10
    )
    # the store is self-describing for plain xarray
    ds = xr.open_zarr(exp.store_url)
    assert ds.cycle.values[1] - ds.cycle.values[0] == np.timedelta64(6, "h")
    assert list(ds.window_time.values.astype("timedelta64[s]").astype(int)) == [
        0,
        5400,
        10800,
        16200,
        21600,
    ]
    assert (ds.obs_mask.values[:N, 0] == False).all()  # noqa: E712 (row 0: the previous cycle's)
    assert (ds.obs_qc.values[:N, 1:] == storage.QC.index("pass")).all()


def test_flow_runs_are_named_and_tagged_like_a_cycling_suite(l96_runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["pipe-l96"])),
            sort=FlowRunSort.NAME_ASC,
            limit=200,
        )
    names = {r.name for r in runs}
    assert {"pipe-l96/20260101T0000Z", "pipe-l96/20260104T1800Z"} <= names
    cycle_run = next(r for r in runs if r.name == "pipe-l96/20260101T0600Z")
    assert {"pipe-l96", "strong_4dvar", "lorenz96"} <= set(cycle_run.tags)
    assert cycle_run.state.is_completed()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [cycle_run.id]}),
            sort=TaskRunSort.ID_DESC,
            limit=50,
        )
    assert {t.name for t in task_runs} == {
        f"{step}/20260101T0600Z"
        for step in (
            "ingest-obs",
            "forecast-background",
            "analyse",
            "gate",
            "forecast-product",
            "persist",
        )
    }


def test_block_mode_equals_cycle_by_cycle(l96_runs):
    per_cycle, block, _, out_block = l96_runs
    assert out_block["statuses"] == {"committed": N}
    a = store_arrays(tasks.experiment(per_cycle).store_url, N)
    b = store_arrays(tasks.experiment(block).store_url, N)
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], atol=1e-12, rtol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _chunk_files(url):
    from pathlib import Path

    return {
        str(p.relative_to(url)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in Path(url).rglob("*")
        if p.is_file() and "/c/" in str(p.relative_to(url))
    }


def test_backfill_fills_a_gap_and_rerun_recomputes(prefect_api, tmp_path):
    cfg = experiment_config(tmp_path, "l63-3dvar", experiment="backfill-l63")
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 12, 0)
    _flows.cycling_flow(str(cfg), end="20260103T1800Z", block=4)
    complete = store_arrays(exp.store_url, 12)
    with storage.CycleStore.open(exp.store_url, mode="a") as s:  # a gap: cycles 5–7 lost
        for k in (5, 6, 7):
            s.write_cycle(exp.axis.point(k), {}, "empty")
    before = _chunk_files(exp.store_url)
    out = _flows.cycling_flow(str(cfg), start="20260101T0000Z", end="20260103T1800Z")
    assert out["cycles"] == 3 and out["already_done"] == 9
    after = _chunk_files(exp.store_url)
    filled = store_arrays(exp.store_url, 12)
    for name in ("analysis", "background", "obs_value", "status"):
        np.testing.assert_array_equal(filled[name], complete[name], err_msg=name)
    # (the block task forecasts its products batched: equal to rounding)
    np.testing.assert_allclose(filled["forecast"], complete["forecast"], rtol=1e-13, atol=1e-12)
    # the per-cycle chunks of the other cycles were not rewritten
    untouched = [
        key
        for key in before
        if key.split("/")[0] in ("analysis", "background", "forecast")
        and int(key.split("/")[2]) not in (5, 6, 7)
    ]
    assert len(untouched) == 3 * 9
    for key in untouched:
        assert after[key] == before[key], key
    # --rerun recomputes committed cycles (here 2–3) and only those
    out = _flows.cycling_flow(str(cfg), start="20260101T1200Z", end="20260101T1800Z", rerun=True)
    assert out["cycles"] == 2 and out["already_done"] == 0
    rerun = _chunk_files(exp.store_url)
    changed = {
        int(k.split("/")[2])
        for k in rerun
        if k.startswith("analysis/") and rerun[k][1] != after[k][1]
    }
    assert changed == {2, 3}
    np.testing.assert_array_equal(store_arrays(exp.store_url, 12)["analysis"], complete["analysis"])


def _corrupt(obs_url, point, value):
    """Replaces the observations at one time with `value`."""
    table = pd.read_parquet(obs_url)
    at = table["time"] == storage.iso(point).replace("Z", ":00Z")
    assert at.any()
    table.loc[at, "value"] = value
    table.to_parquet(obs_url, index=False)


def _divergent(tmp_path, name, policy):
    """l96-3dvar with the QC that would catch a wild observation switched off, so that the
    gate must."""
    cfg = experiment_config(
        tmp_path,
        "l96-3dvar",
        experiment=name,
        observations__qc={"gross_error_k": 1e9, "background_std": 1.0},
        gates__policy=policy,
    )
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 12, 0)
    _corrupt(exp.obs_url, exp.axis.point(5) + pd.Timedelta(hours=6), 1.0e4)  # cycle 5's window end
    return cfg, exp


def test_gate_fallback_carries_the_background(prefect_api, tmp_path):
    cfg, exp = _divergent(tmp_path, "gate-fallback", "fallback")
    out = _flows.cycling_flow(str(cfg), end="20260103T1800Z")
    assert out["statuses"] == {"committed": 11, "degraded": 1}
    s = storage.CycleStore.open(exp.store_url)
    table = s.status_table()
    assert table["status"].iloc[5] == "degraded"
    assert (
        "gate:" in table["status_reason"].iloc[5] and "fallback" in table["status_reason"].iloc[5]
    )
    assert table["gate_verdict"].iloc[5] == 0
    c5, c6 = s.read_cycle(exp.axis.point(5)), s.read_cycle(exp.axis.point(6))
    np.testing.assert_array_equal(c5["analysis"], c5["background"])  # the analysis was not used
    np.testing.assert_array_equal(c6["background"][0], c5["background"][-1])
    ds = xr.open_zarr(exp.store_url).isel(cycle=slice(0, 12))
    assert np.isfinite(ds.analysis.values).all()
    # the Prefect UI shows the cycle as Degraded, with the reason as the state message
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=["gate-fallback/20260102T0600Z"])
            ),
            sort=FlowRunSort.NAME_ASC,
            limit=5,
        )
    assert run.state.name == "Degraded" and run.state.is_completed()
    assert "gate:" in run.state.message
    assert window_end_rmse(exp.store_url, exp.truth_url, 12, spinup=6) < 1.5


def test_gate_halt_stops_the_run_in_block_mode_too(prefect_api, tmp_path):
    cfg, exp = _divergent(tmp_path, "gate-halt", "halt")
    with pytest.raises(tasks.CycleHalted, match=r"cycle 20260102T0600Z failed the gate"):
        _flows.cycling_flow(str(cfg), end="20260103T1800Z", block=8)
    s = storage.CycleStore.open(exp.store_url)
    statuses = list(s.status_table()["status"].iloc[:12])
    assert statuses == ["committed"] * 5 + ["failed"] + ["empty"] * 6
    assert "policy halt" in s.status_table()["status_reason"].iloc[5]
    # a second run halts at the same cycle: nothing after it runs on a rejected analysis
    with pytest.raises(tasks.CycleHalted):
        _flows.cycling_flow(str(cfg), end="20260103T1800Z")
    assert (
        list(storage.CycleStore.open(exp.store_url).status_table()["status"].iloc[6:12])
        == ["empty"] * 6
    )


def test_a_window_without_observations_is_forecast_only(prefect_api, tmp_path):
    cfg = experiment_config(tmp_path, "l96-3dvar", experiment="no-obs")
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 6, 0)
    table = pd.read_parquet(exp.obs_url)
    gone = storage.iso(exp.axis.point(3)).replace("Z", ":00Z")
    table[table["time"] != gone].to_parquet(exp.obs_url, index=False)
    out = _flows.cycling_flow(str(cfg), end="20260102T0000Z")
    assert out["statuses"] == {"committed": 4, "degraded": 1}
    s = storage.CycleStore.open(exp.store_url)
    row = s.status_table().iloc[2]  # cycle 2's window ends at cycle point 3
    assert row["status"] == "degraded" and row["status_reason"].startswith("forecast-only")
    assert row["gate_verdict"] == storage.GATE_VERDICT.index("not_run")
    c2 = s.read_cycle(exp.axis.point(2))
    np.testing.assert_array_equal(c2["analysis"], c2["background"])


def test_running_before_simulate_says_what_to_do(prefect_api, tmp_path):
    cfg = experiment_config(tmp_path, "l63-3dvar", experiment="no-osse")
    with pytest.raises(storage.ObservationError, match=r"vardax-cycle simulate"):
        _flows.cycling_flow(str(cfg), end="20260101T0600Z")


def test_a_replaced_osse_is_refused_then_forced_and_the_run_stops_at_the_seam(
    prefect_api, tmp_path
):
    """simulate refuses to replace the OSSE of committed cycles; --force replaces it, and a
    run that would continue from cycles of the old OSSE refuses, naming the cycle; a rerun
    from the origin recomputes them against the new one."""
    cfg = experiment_config(tmp_path, "l96-3dvar", experiment="reosse")
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 6, 0)
    _flows.cycling_flow(str(cfg), end="20260101T1200Z", block=3)
    with pytest.raises(storage.ObservationError, match="holds 3 cycles done"):
        _flows.simulate_flow(str(cfg), 6, 1)
    _flows.simulate_flow(str(cfg), 6, 1, force=True)
    with pytest.raises(storage.ObservationError, match=r"cycle 20260101T1200Z .*replaced"):
        _flows.cycling_flow(str(cfg), start="20260101T1800Z", end="20260102T0000Z", block=2)
    assert storage.CycleStore.open(exp.store_url).status_of(exp.axis.point(3)) == "empty"
    out = _flows.cycling_flow(str(cfg), end="20260102T0000Z", rerun=True, block=5)
    assert out["statuses"] == {"committed": 5}
