"""A 2-D field through the whole pipeline (Prefect API of the test harness, a real Zarr
store): the QG OSSE with swath observations, cycled by incremental 4DVar cycle by cycle
and in block mode, equals the pure-JAX loop; the store holds `(cycle, window_time, y, x)`
maps with their coordinates for plain xarray; the report draws the maps."""

import numpy as np
import pytest
import xarray as xr
from _pipeline_helpers import run_cycle_by_cycle_and_in_blocks, store_arrays, window_end_rmse

import tasks
from flows._report import write_report

N = 6


@pytest.fixture(scope="module")
def qg_runs(prefect_api, tmp_path_factory):
    small = dict(
        experiment="pipe-qg",
        model={"name": "qg", "ny": 32, "nx": 32, "dt": 0.05},
        observations__network={"kind": "swath", "tracks": 4, "width": 2},
        method__prior_cov={"kind": "spectral", "variance": 0.001, "length_scale": 3.0},
        cycling__window_steps=20,
        cycling__lead_steps=[0, 20],
        cycling__spinup_steps=1500,
    )
    return run_cycle_by_cycle_and_in_blocks(
        tmp_path_factory.mktemp("qg"), "qg-incremental4dvar", N, 4, **small
    )


def test_2d_pipeline_reproduces_the_pure_jax_loop(qg_runs):
    per_cycle, block, out_cycle, out_block = qg_runs
    assert out_cycle["statuses"] == {"committed": N} == out_block["statuses"]
    exp = tasks.experiment(per_cycle)
    ref = tasks.reference_scores(str(per_cycle), N)
    stored = store_arrays(exp.store_url, N)
    accepted = np.asarray(ref["output"].accepted).reshape(N, -1, 32, 32)
    np.testing.assert_allclose(stored["analysis"], accepted, atol=1e-10)
    np.testing.assert_allclose(
        stored["background"],
        np.asarray(ref["output"].background).reshape(accepted.shape),
        atol=1e-10,
    )
    rmse = window_end_rmse(exp.store_url, exp.truth_url, N)
    assert abs(rmse - ref["analysis"]) <= 1e-8
    assert ref["analysis"] < ref["background"]
    blocked = store_arrays(tasks.experiment(block).store_url, N)
    for name in ("analysis", "background", "forecast", "obs_mask", "innovation_chi2_dof"):
        np.testing.assert_allclose(blocked[name], stored[name], atol=1e-12, err_msg=name)


def test_2d_store_holds_maps_for_plain_xarray(qg_runs, tmp_path):
    per_cycle = qg_runs[0]
    exp = tasks.experiment(per_cycle)
    ds = xr.open_zarr(exp.store_url)
    assert ds.analysis.dims == ("cycle", "window_time", "y", "x")
    assert ds.forecast.dims == ("cycle", "lead_time", "y", "x")
    assert ds.sizes["y"] == ds.sizes["x"] == 32
    # the swath network: every observation slot has its grid position, and each window
    # time sees one track (the slots of one track only)
    assert {"obs_y", "obs_x"} <= set(ds.coords)
    assert float(ds.obs_x.max()) < 32 and float(ds.obs_y.min()) >= 0
    seen = ds.obs_mask.isel(cycle=N - 1).values  # (window_time, obs)
    times = np.flatnonzero(seen.any(axis=1))
    assert len(times) == 2  # window times 10 and 20 (0 is the previous window's end)
    for t in times:  # slots j·64 … j·64 + 63 are track j (32 along, 2 across)
        assert len(np.unique(np.flatnonzero(seen[t]) // 64)) == 1
        assert seen[t].sum() > 0.9 * 64
    truth = xr.open_zarr(exp.truth_url).truth
    assert truth.dims == ("time", "y", "x")
    # maps in the report
    summary = write_report(exp.store_url, tmp_path / "report", truth_url=exp.truth_url)
    assert (tmp_path / "report" / "maps.png").stat().st_size > 10_000
    assert "maps.png" in summary.read_text()
