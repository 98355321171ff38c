"""The seed 002 table and the cycled Lorenz-96 scores (timings live in bench/)."""

import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vardax_core as vc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cycled  # noqa: E402
import window  # noqa: E402

KEYS = (0, 1, 2, 3)  # the same draws as bench/window.py


@pytest.fixture(scope="module")
def l96_2l_table():
    """The median over the draws of each score. A draw is a chaotic truth spun up 2000
    steps, which the machine's floating point decides: on a CPU without FMA (XLA's
    `--xla_cpu_max_isa=AVX`) draw 0's truth is one where strong and incremental 4DVar both
    land in a poor local minimum (RMSE 2.9), which would decide a mean of four."""
    rows = {}
    for k in KEYS:
        problem = vc.l96_two_level_window_problem(jax.random.PRNGKey(k))
        for name, method in window.methods(problem).items():
            rows.setdefault(name, []).append(window.score(problem, method, repeats=0))
    return {
        name: {c: float(np.median([r[c] for r in rs])) for c in rs[0]} for name, rs in rows.items()
    }


@pytest.mark.slow
def test_seed_002_table(l96_2l_table):
    t = l96_2l_table
    for name, row in t.items():
        assert np.isfinite(row["rmse_total"]), name
    assert t["strong_4dvar"]["rmse_total"] <= 0.724
    # the seed's incremental 4DVar returned NaN; ours is finite and close to strong
    assert t["incremental_4dvar"]["rmse_total"] <= 1.2 * t["strong_4dvar"]["rmse_total"]
    assert t["weak_4dvar"]["rmse_total"] <= 3.001
    # OI and 3DVar are the same estimator here (linear H); both far behind 4DVar on the
    # slow block, which only the dynamics can fill in between sparse observations
    assert abs(t["oi"]["rmse_total"] - t["3dvar"]["rmse_total"]) < 1e-6
    assert t["oi"]["rmse_slow"] > 3 * t["strong_4dvar"]["rmse_slow"]


@pytest.mark.slow
def test_seed_002_reconstruction_reproduces_the_seeds_oi():
    """The reconstruction (slow sites observed with probability 0.2) reproduces the seed's
    printed OI scores on the first draw: total 2.055, slow block 6.070."""
    problem = vc.l96_two_level_window_problem(jax.random.PRNGKey(0))
    row = window.score(problem, window.methods(problem)["oi"], repeats=0)
    assert abs(row["rmse_total"] - 2.055) / 2.055 < 0.05
    assert abs(row["rmse_slow"] - 6.070) / 6.070 < 0.05


class _Args:
    cycles, spinup, repeats, seed = 3000, 500, 0, 3


@pytest.mark.slow
@pytest.mark.parametrize("method, bound, dapper", [("4dvar", 0.30, 0.341), ("3dvar", 0.40, 0.417)])
def test_cycled_l96_beats_dapper(method, bound, dapper):
    row = cycled.experiment(method, *cycled.CONFIGS[method], _Args)
    assert row["failed"] == 0
    assert row["rmse.a"] <= bound < dapper
    assert row["rmse.a"] < row["rmse.f"]


def test_cycling_restarts_from_the_analysis():
    """Each cycle's background is the forecast of the previous cycle's analysis."""
    model = vc.Lorenz96(K=10)
    H = vc.SubsetObs(range(10), 10)
    problem = vc.cycled_problem(model, H, 1.0, 12, jax.random.PRNGKey(0))
    method = vc.OptimalInterpolation(
        H, vc.ScaledIdentityCovariance(10, 0.5), vc.ScaledIdentityCovariance(10, 1.0)
    )
    cycle = vc.Cycle(model, method, window=3)
    out = eqx.filter_jit(vc.run_cycles)(cycle, problem.first_background, problem.obs, 4)
    for c in range(1, 4):
        assert jnp.allclose(out.background[c], model.rollout(out.analysis.trajectory[c - 1, -1], 3))
    with pytest.raises(ValueError, match="need 16 observation rows, got 13"):
        vc.run_cycles(cycle, problem.first_background, problem.obs, 5)


def test_sliding_windows_hand_on_from_inside_the_window():
    """Windows of 4 steps, one step apart: each cycle's background starts from the previous
    accepted trajectory one step in, and a method of `new_rows` assimilates (and the record
    keeps as assimilated) only each window's newest row — all of the first one's, after a
    cold start."""
    model = vc.Lorenz96(K=10)
    H = vc.SubsetObs(range(10), 10)
    B, R = vc.ScaledIdentityCovariance(10, 0.1), vc.ScaledIdentityCovariance(10, 1.0)
    problem = vc.cycled_problem(model, H, 1.0, 12, jax.random.PRNGKey(0))
    method = vc.IEnKS(model, H, B, R, members=6, new_rows=1)
    cycle = vc.Cycle(model, method, window=4, shift=1)
    first = vc.initial_ensemble(problem.first_background, B, jax.random.PRNGKey(1), 6)
    out = eqx.filter_jit(vc.run_cycles)(cycle, first, problem.obs, 5)
    for c in range(1, 5):
        start = out.accepted_ensemble[c - 1][:, 1]
        np.testing.assert_allclose(out.background_ensemble[c][:, 0], start, atol=1e-12)
    # the first window, from a cold start, is new throughout (row 0 is the cycle point's)
    assert out.obs_mask[0, 1:].all() and not out.obs_mask[0, 0].any()
    assert not out.obs_mask[1:, :-1].any() and out.obs_mask[1:, -1].all()
    # a run that continues from a handed-on ensemble takes only the newest row at once
    more = eqx.filter_jit(vc.run_cycles)(cycle, first, problem.obs, 2, fresh=False)
    assert not more.obs_mask[:, :-1].any() and more.obs_mask[:, -1].all()
    with pytest.raises(ValueError, match="need 1 <= shift <= window"):
        vc.Cycle(model, method, window=4, shift=5)
    with pytest.raises(ValueError, match="shift=2, but the cycle's shift is 1"):
        vc.run_cycles(cycle, first, problem.obs, 5, 2)
