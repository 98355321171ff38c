"""The gate: no false alarms on a healthy run; a divergent analysis is caught and nothing
after it uses it (fallback policy inside the pure-JAX cycling loop)."""

from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
import vardax_core as vc

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "l96-3dvar.yaml"
N = 120


@pytest.fixture(scope="module")
def setup():
    exp = tasks.experiment(CONFIG)
    cfg, model, method = exp.cfg, exp.model, exp.core.method
    gate = vc.Gate(
        method.obs_operator,
        method.prior_cov,
        method.obs_cov,
        cfg.gates.chi2_dof,
        cfg.gates.increment_sigma,
    )
    problem = tasks.osse_problem(exp, N, seed=0)
    return model, method, gate, problem


def _run(setup, obs, gate=True):
    model, method, g, problem = setup
    cycle = vc.Cycle(model, method, gate=g if gate else None, window=1)
    return eqx.filter_jit(vc.run_cycles)(cycle, problem.first_background, obs, N)


def test_healthy_run_passes_every_cycle(setup):
    out = _run(setup, setup[3].obs)
    assert bool(jnp.all(out.gate.passed))
    chi2 = np.asarray(out.gate.chi2_dof[20:])
    assert 0.5 < chi2.mean() < 2.0  # B and R consistent with the innovations
    assert jnp.array_equal(out.accepted, out.analysis.trajectory)


@pytest.mark.parametrize("corruption", [1e3, np.nan], ids=["gross", "nan"])
def test_divergent_analysis_is_caught_and_not_used(setup, corruption):
    model, _, _, problem = setup
    bad_cycle = 60
    values = problem.obs.values.at[bad_cycle + 1, :5].set(corruption)  # cycle c observes row c+1
    obs = vc.ObsWindow(values, problem.obs.mask)
    out = _run(setup, obs)
    passed = np.asarray(out.gate.passed)
    assert not passed[bad_cycle] and passed[:bad_cycle].all() and passed[bad_cycle + 1 :].all()
    # the rejected cycle hands on its background; the next cycle forecasts from it
    assert jnp.array_equal(out.accepted[bad_cycle], out.background[bad_cycle])
    assert jnp.allclose(
        out.background[bad_cycle + 1], model.rollout(out.background[bad_cycle, -1], 1)
    )
    truth = problem.truth[vc.analysis_times(N, 1)]
    rmse = np.asarray(vc.rmse_t(out.accepted[:, -1], truth))
    assert rmse[bad_cycle + 1 :].max() < 2.0
    if np.isnan(corruption):
        assert not np.isfinite(float(out.gate.chi2_dof[bad_cycle]))
    else:
        # without the gate the corrupted analysis is carried on
        ungated = _run(setup, obs, gate=False)
        ungated_rmse = np.asarray(vc.rmse_t(ungated.analysis.trajectory[:, -1], truth))
        assert ungated_rmse[bad_cycle] > 10 * rmse[bad_cycle]
        assert float(out.gate.increment_max_sigma[bad_cycle]) > 10


def test_gate_bounds_are_checked():
    H = vc.SubsetObs([0], 3)
    B, R = vc.ScaledIdentityCovariance(3, 1.0), vc.ScaledIdentityCovariance(1, 1.0)
    with pytest.raises(ValueError, match="chi2_dof_bounds must be 0 <= low < high"):
        vc.Gate(H, B, R, chi2_dof_bounds=(2.0, 1.0))
