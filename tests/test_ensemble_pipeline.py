"""Ensemble methods through the pipeline (a real Prefect API, a real Zarr store): the
store holds the members, their mean and spread for plain xarray; it reproduces the pure-JAX
loop; block mode equals cycle by cycle; the gate rejects a collapsed ensemble and carries
the background ensemble."""

import numpy as np
import pytest
import xarray as xr
from _pipeline_helpers import experiment_config, run_cycle_by_cycle_and_in_blocks, store_arrays

import storage
import tasks
from flows import _flows

N = 10


@pytest.fixture(
    scope="module", params=["l96-etkf", "l96-letkf", "l96-ienks-lag4", "l96-hybrid-envar"]
)
def runs(request, prefect_api, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return run_cycle_by_cycle_and_in_blocks(
        root, request.param, N, 4, experiment=f"pipe-{request.param}"
    )


def test_the_store_holds_the_ensemble_and_reproduces_the_loop(runs):
    per_cycle, _, out, _ = runs
    assert out["statuses"] == {"committed": N}
    exp = tasks.experiment(per_cycle)
    ref = tasks.reference_scores(str(per_cycle), N)["output"]
    ds = xr.open_zarr(exp.store_url).isel(cycle=slice(0, N))
    members = exp.cfg.method.members
    assert ds.analysis_ensemble.dims == ("cycle", "member", "site")
    assert ds.sizes["member"] == members
    # the members where the next cycle starts: the window end, or one step into a sliding
    # window (l96-ienks-lag4, l96-hybrid-envar: windows of 4 steps, one apart)
    at = exp.shift
    np.testing.assert_allclose(
        ds.analysis_ensemble.values, np.asarray(ref.accepted_ensemble)[:, :, at], atol=1e-10
    )
    np.testing.assert_allclose(
        ds.background_ensemble.values, np.asarray(ref.background_ensemble)[:, :, at], atol=1e-10
    )
    # background / analysis are the ensemble means; the spreads are the members' std
    np.testing.assert_allclose(
        ds.analysis.values[:, at], ds.analysis_ensemble.mean("member").values, atol=1e-12
    )
    np.testing.assert_allclose(
        ds.analysis_spread.values, ds.analysis_ensemble.std("member", ddof=1).values, atol=1e-12
    )
    # the update never widens the ensemble (a Kalman update); inflation then multiplies it
    inflation = exp.cfg.method.inflation
    assert (ds.analysis_spread / inflation <= ds.background_spread + 1e-12).all()
    # the background's mean spread at the window end (set against its error there)
    at_end = np.std(np.asarray(ref.background_ensemble)[:, :, -1], axis=1, ddof=1).mean(-1)
    np.testing.assert_allclose(ds.ensemble_spread.values, at_end, atol=1e-10)
    # what a sliding window leaves to earlier cycles keeps its static flag, not gross_error
    gross = ds.obs_qc.values == storage.QC.index("gross_error")
    assert gross.mean() < 0.01
    assert ds.forecast_spread.dims == ("cycle", "lead_time")
    assert (np.diff(ds.forecast_spread.values, axis=1) > 0).all()  # spread grows with lead
    assert np.isfinite(ds.innovation_chi2_dof.values).all()


def test_block_mode_equals_cycle_by_cycle(runs):
    per_cycle, blocked, _, out_block = runs
    assert out_block["statuses"] == {"committed": N}
    a = store_arrays(tasks.experiment(per_cycle).store_url, N)
    b = store_arrays(tasks.experiment(blocked).store_url, N)
    assert a.keys() == b.keys()
    for name in a:
        if name == "obs_source":
            continue
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], atol=1e-12, rtol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_collapsed_ensemble_is_rejected_and_the_background_carried(prefect_api, tmp_path):
    cfg = experiment_config(tmp_path, "l96-etkf", experiment="collapse", gates={"min_spread": 50.0})
    _flows.simulate_flow(str(cfg), 3, 0)
    out = _flows.cycling_flow(str(cfg), end="20260101T1200Z")
    assert out["statuses"] == {"degraded": 3}
    ds = xr.open_zarr(str(tmp_path / "store.zarr")).isel(cycle=slice(0, 3))
    assert all("collapsed" in r for r in ds.status_reason.values)
    np.testing.assert_array_equal(ds.analysis_ensemble.values, ds.background_ensemble.values)
    assert (ds.gate_verdict.values == storage.GATE_VERDICT.index("failed")).all()


def test_a_cold_start_without_a_truth_draws_the_members_from_the_climatology(prefect_api, tmp_path):
    """Observations from a file, no first guess: the first members are states of a free run
    (spread as the model varies), so the LETKF finds the truth — members tight around the
    climatological mean would trust it over the observations (RMSE ≈ 4 throughout)."""
    n = 150
    osse = experiment_config(tmp_path, "l96-letkf", "osse.yaml", store__url=str(tmp_path / "o"))
    _flows.simulate_flow(str(osse), n, 0)
    exp = tasks.experiment(osse)
    cfg = experiment_config(
        tmp_path, "l96-letkf", observations__source="file", observations__url=exp.obs_url
    )
    out = _flows.cycling_flow(str(cfg), end=storage.cycle_id(exp.axis.point(n - 1)), block=n)
    assert out["statuses"] == {"committed": n}
    ds = xr.open_zarr(str(tmp_path / "store.zarr")).isel(cycle=slice(0, n))
    # the first background: the members spread as the climate varies, one step on
    climate = tasks.experiment(cfg).climate_states().std(axis=0, ddof=1).mean()
    assert 0.7 * climate < ds.background_spread.values[0, -1].mean() < 1.3 * climate
    truth = np.asarray(storage.read_nature_run(exp.truth_url).values).reshape(-1, 40)
    error = np.sqrt(np.mean((ds.analysis.values[:, -1] - truth[1 : n + 1]) ** 2, axis=-1))
    assert error[:5].mean() > 1.5  # it starts far from the truth
    assert error[-30:].mean() < 0.4
