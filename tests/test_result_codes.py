"""Numerical failure is a result code, not an exception, and the code says what happened:
OI's singular innovation covariance, incremental 4DVar out of outer loops, a learned
method's non-finite analysis — each ends as a gated cycle with its reason in the store."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from _pipeline_helpers import experiment_config

import storage
import tasks
import vardax_core as vc
from flows import _flows


def _duplicated_oi(n: int, m: int, error_std: float):
    """OI whose first two observations see the same state component with an error far
    below B's: the rows of `H B Hᵀ + R` for them are equal to rounding — a singular
    innovation covariance (two co-located instruments of negligible error)."""
    rows = np.eye(m, n)
    rows[1] = rows[0]
    H = vc.LinearObs(rows)
    B = vc.ScaledIdentityCovariance(n, 1.0)
    return vc.OptimalInterpolation(H, B, vc.ScaledIdentityCovariance(m, error_std**2))


def test_result_codes_have_names_and_messages():
    assert vc.RESULT_NAMES[0] == "successful"
    for code, name in enumerate(vc.RESULT_NAMES):
        item = getattr(vc.AnalysisResult, name)
        assert int(vc.result_code(item)) == code and vc.result_name(code) == name
    assert "singular" in vc.result_message(vc.RESULT_NAMES.index("singular"))
    assert vc.result_name(-1) == "not_run"
    assert vc.failed_checks(0) == ()
    assert vc.failed_checks(0b10100) == ("chi2", "oracle")


def test_oi_reports_a_singular_innovation_covariance():
    oi = _duplicated_oi(4, 3, 1e-12)
    background = jnp.zeros((2, 4))
    obs = vc.ObsWindow(
        jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]]), jnp.array([[0, 0, 0], [1, 1, 1]])
    )
    a = oi(background, obs)
    assert a.result == vc.AnalysisResult.singular
    # the same observations once each: a regular solve
    fine = vc.OptimalInterpolation(
        vc.SubsetObs(range(3), 4), vc.ScaledIdentityCovariance(4, 1.0), oi.obs_cov
    )
    assert fine(background, obs).result == vc.AnalysisResult.successful


def test_incremental_4dvar_out_of_outer_loops_says_so():
    model = vc.Lorenz96(K=8)
    H = vc.SubsetObs(range(0, 8, 2), 8)
    problem = vc.cycled_problem(model, H, 1.0, 5, __import__("jax").random.PRNGKey(1))
    B, R = vc.ScaledIdentityCovariance(8, 4.0), vc.ScaledIdentityCovariance(4, 1.0)
    background = model.rollout(problem.first_background, 5)
    obs = vc.ObsWindow(problem.obs.values[:6], problem.obs.mask[:6].at[0].set(False))
    short = vc.IncrementalFourDVar(model, H, B, R, n_outer=1, n_inner=5, tolerance=1e-12)
    a = short(background, obs)
    assert a.result == vc.AnalysisResult.max_steps_reached and int(a.iterations) == 1
    enough = vc.IncrementalFourDVar(model, H, B, R, n_outer=20, n_inner=40, tolerance=1e-6)
    b = enough(background, obs)
    assert b.result == vc.AnalysisResult.successful and int(b.iterations) < 20


def test_a_learned_method_with_a_nonfinite_output_says_so():
    H = vc.SubsetObs(range(3), 3)
    B, R = vc.DiagonalCovariance(jnp.full(3, 4.0)), vc.ScaledIdentityCovariance(3, 1.0)
    net = vc.FourDVarNet1D(3, 4, key=__import__("jax").random.PRNGKey(0), n_solver_steps=2)
    broken = eqx.tree_at(lambda n: n.grad_weight, net, jnp.array(jnp.nan))
    obs = vc.ObsWindow(jnp.ones((4, 3)), jnp.ones((4, 3), bool).at[0].set(False))
    a = vc.FourDVarNetMethod(broken, H, B, R)(jnp.zeros((4, 3)), obs)
    assert a.result == vc.AnalysisResult.nonfinite_analysis
    assert (
        vc.FourDVarNetMethod(net, H, B, R)(jnp.zeros((4, 3)), obs).result
        == vc.AnalysisResult.successful
    )


def _row(store_url, k: int) -> dict:
    ds = xr.open_zarr(store_url).isel(cycle=k)
    return {name: ds[name].values.item() for name in ("status", "status_reason", "result_code")}


def test_a_singular_oi_cycle_is_gated_and_its_reason_stored(prefect_api, tmp_path):
    """The real cycle flow and store, with an OI whose innovation covariance is singular:
    the cycle is degraded, carries its background, and its reason names both."""
    # the observations' own errors (the file's error_std, which R takes) are negligible
    cfg = experiment_config(
        tmp_path, "l96-oi", experiment="singular-oi", observations__error_std=1e-12
    )
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 2, 0)
    oi = _duplicated_oi(exp.model.state_size, exp.layout.obs_size, 1e-12)
    core = eqx.tree_at(lambda c: c.method, exp.core, oi)
    core = eqx.tree_at(lambda c: c.gate, core, vc.Gate.for_method(oi))
    singular = exp.with_cycle(core)
    with tasks.open_run(singular) as run:
        for k in range(2):
            _flows.cycle_flow(str(cfg), exp.axis.cycle(k).id, run=run)
    for k in range(2):
        row = _row(exp.store_url, k)
        assert storage.STATUS[row["status"]] == "degraded"
        assert vc.result_name(row["result_code"]) == "singular"
        reason = row["status_reason"]
        assert "the analysis is not finite" in reason and "singular" in reason
        assert "carried the background (policy fallback)" in reason
    ds = xr.open_zarr(exp.store_url).isel(cycle=slice(0, 2))
    np.testing.assert_array_equal(ds.analysis.values, ds.background.values)


@pytest.mark.parametrize("block", [0, 4])
def test_incremental_4dvar_out_of_outer_loops_is_recorded(prefect_api, tmp_path, block):
    """One outer loop and a tolerance it cannot meet: every cycle reports
    `max_steps_reached` in the store, per cycle and in block mode alike; the analysis is
    still used where the gate passes it, and the reason says what happened."""
    cfg = experiment_config(
        tmp_path,
        "l96-incremental4dvar",
        experiment=f"short-incremental-{block}",
        method__n_outer=1,
        method__rtol=1e-12,
    )
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 3, 0)
    _flows.cycling_flow(str(cfg), end=exp.axis.cycle(2).id, block=block)
    for k in range(3):
        row = _row(exp.store_url, k)
        assert vc.result_name(row["result_code"]) == "max_steps_reached"
        assert "analysis max_steps_reached" in row["status_reason"]
        assert storage.STATUS[row["status"]] in ("committed", "degraded")
