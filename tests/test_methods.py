"""The five classical methods: agreement on a linear-Gaussian problem, and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import vardax_core as vc

N = 10


def _linear_gaussian(key, obs_op=None):
    """One observation time, linear H (half the sites) and correlated Gaussian B, a
    missing observation among the rest."""
    k_x, k_y = jax.random.split(key)
    model = vc.Lorenz96(K=N)
    H = obs_op or vc.SubsetObs(range(0, N, 2), N)
    B = vc.periodic_covariance(N, 2.0, 1.5)
    R = vc.DiagonalCovariance(jnp.linspace(0.3, 0.6, H.obs_size))
    background = 8.0 + jax.random.normal(k_x, (1, N))
    values = H(background[0])[None] + jax.random.normal(k_y, (1, H.obs_size))
    mask = jnp.ones((1, H.obs_size), bool).at[0, 1].set(False)
    return model, H, B, R, background, vc.ObsWindow(values.at[0, 1].set(jnp.nan), mask)


def _all_methods(model, H, B, R):
    return {
        "oi": vc.OptimalInterpolation(H, B, R),
        "3dvar": vc.ThreeDVar(H, B, R),
        "strong": vc.StrongFourDVar(model, H, B, R),
        "weak": vc.WeakFourDVar(
            model, H, B, R, model_error_cov=vc.ScaledIdentityCovariance(N, 0.1)
        ),
        "incremental": vc.IncrementalFourDVar(model, H, B, R),
    }


@pytest.mark.parametrize("dense_h", [False, True], ids=["subset", "matrix"])
def test_linear_gaussian_methods_agree(key, dense_h):
    obs_op = vc.LinearObs(jax.random.normal(jax.random.PRNGKey(7), (4, N))) if dense_h else None
    model, H, B, R, background, obs = _linear_gaussian(key, obs_op)
    analyses = {
        name: eqx.filter_jit(m)(background, obs) for name, m in _all_methods(model, H, B, R).items()
    }
    reference = analyses["oi"].trajectory
    # the analysis moved, and towards the observations
    assert jnp.linalg.norm(reference - background) > 0.1
    for name, a in analyses.items():
        assert a.result == vc.AnalysisResult.successful, name
        assert jnp.max(jnp.abs(a.trajectory - reference)) < 1e-4, name
        assert a.cost_after < a.cost_before, name
    # the closed form, written out with the observed rows only
    Hm = jax.jacfwd(H)(background[0])[jnp.array([i for i in range(H.obs_size) if i != 1])]
    Bm, Rm = B.as_matrix(), R.as_matrix()
    keep = jnp.array([i for i in range(H.obs_size) if i != 1])
    Rm = Rm[jnp.ix_(keep, keep)]
    d = obs.values[0, keep] - Hm @ background[0]
    xa = background[0] + Bm @ Hm.T @ jnp.linalg.solve(Hm @ Bm @ Hm.T + Rm, d)
    assert jnp.allclose(reference[0], xa, atol=1e-10)


def test_variational_minimum_is_the_cost_minimum(key):
    """From a background near the truth (one minimum), strong and incremental 4DVar reach
    the same analysis, where the gradient of the full 4DVar cost vanishes."""
    problem = vc.l96_window_problem(key, K=12, n_assim=6, n_total=10)
    prior_cov = vc.ScaledIdentityCovariance(12, 1.0)
    x_b = problem.truth[0] + jax.random.normal(jax.random.PRNGKey(9), (12,))
    background = problem.model.rollout(x_b, 6)
    kw = dict(obs_operator=problem.obs_operator, prior_cov=prior_cov, obs_cov=problem.obs_cov)
    strong = vc.StrongFourDVar(problem.model, **kw)
    incremental = vc.IncrementalFourDVar(problem.model, **kw, n_outer=20, n_inner=200)
    a_s = eqx.filter_jit(strong)(background, problem.obs)
    a_i = eqx.filter_jit(incremental)(background, problem.obs)

    def cost(x0):
        traj = problem.model.rollout(x0, 6)
        return vc.prior_cost(prior_cov, x0 - x_b) + vc.obs_cost(
            problem.obs_operator, problem.obs_cov, traj, problem.obs
        )

    for a in (a_s, a_i):
        assert jnp.isclose(cost(a.initial), a.cost_after, rtol=1e-10)
        assert jnp.linalg.norm(jax.grad(cost)(a.initial)) < 1e-3
    assert jnp.max(jnp.abs(a_s.trajectory - a_i.trajectory)) < 1e-4
    assert vc.rmse(a_s.trajectory, problem.truth[:7]) < 0.75 * vc.rmse(
        background, problem.truth[:7]
    )


def test_nonlinear_obs_3dvar_and_incremental(key):
    model = vc.Lorenz96(K=N)
    H = vc.NonlinearObs(range(N), N)
    B, R = vc.ScaledIdentityCovariance(N, 1.0), vc.ScaledIdentityCovariance(N, 1e-4)
    truth = vc.nature_run(model, key, 0, 300)
    background = truth + 0.8 * jax.random.normal(jax.random.PRNGKey(5), truth.shape)
    obs = vc.ObsWindow(H(truth[0])[None], jnp.ones((1, N), bool))
    a3 = vc.ThreeDVar(H, B, R)(background, obs)
    ai = vc.IncrementalFourDVar(model, H, B, R, n_outer=10)(background, obs)
    assert vc.rmse(a3.trajectory, truth) < 0.75 * vc.rmse(background, truth)
    assert jnp.max(jnp.abs(a3.trajectory - ai.trajectory)) < 1e-4
    with pytest.raises(
        ValueError, match="OptimalInterpolation needs a linear obs_operator.*NonlinearObs"
    ):
        vc.OptimalInterpolation(H, B, R)


def test_forward_adjoint_slot(key):
    import diffrax as dfx

    model, H, B, R, background, obs = _linear_gaussian(key)
    with pytest.raises(ValueError, match="forward_adjoint needs a model integrated by Diffrax"):
        vc.StrongFourDVar(model, H, B, R, forward_adjoint=dfx.BacksolveAdjoint())
    reverse_only = vc.Lorenz96(K=N, integrator=vc.Diffrax())
    with pytest.raises(ValueError, match="RecursiveCheckpointAdjoint does not give.*DirectAdjoint"):
        vc.IncrementalFourDVar(reverse_only, H, B, R)
    problem = vc.l96_window_problem(key, K=12, n_assim=4, n_total=8)
    kw = dict(
        obs_operator=problem.obs_operator, prior_cov=problem.prior_cov, obs_cov=problem.obs_cov
    )
    tight = dfx.PIDController(rtol=1e-10, atol=1e-10)
    diffrax_model = vc.Lorenz96(K=12, integrator=vc.Diffrax(stepsize_controller=tight))
    rk4 = vc.StrongFourDVar(vc.Lorenz96(K=12, integrator=vc.RK4(substeps=4)), **kw)
    backsolve = vc.StrongFourDVar(
        diffrax_model, **kw, forward_adjoint=dfx.BacksolveAdjoint(stepsize_controller=tight)
    )
    a1 = eqx.filter_jit(rk4)(problem.background, problem.obs)
    a2 = eqx.filter_jit(backsolve)(problem.background, problem.obs)
    assert jnp.max(jnp.abs(a1.trajectory - a2.trajectory)) < 1e-4


# --- bad input ------------------------------------------------------------------------


def test_shape_and_configuration_errors_name_the_problem(key):
    model, H, B, R, background, obs = _linear_gaussian(key)
    method = vc.StrongFourDVar(model, H, B, R)
    with pytest.raises(
        ValueError, match=r"background has shape \(1, 7\), expected \(window times, 10\)"
    ):
        method(jnp.zeros((1, 7)), obs)
    with pytest.raises(ValueError, match=r"observations have shape \(1, 3\), expected \(1, 5\)"):
        method(background, vc.ObsWindow(jnp.zeros((1, 3))))
    with pytest.raises(ValueError, match="prior_cov has size 4, state size is 10"):
        vc.StrongFourDVar(model, H, vc.ScaledIdentityCovariance(4, 1.0), R)
    with pytest.raises(ValueError, match="obs_cov has size 10 but obs_operator returns 5"):
        vc.ThreeDVar(H, B, vc.ScaledIdentityCovariance(N, 1.0))
    with pytest.raises(ValueError, match="obs_operator takes states of size 12"):
        vc.OptimalInterpolation(vc.SubsetObs([0], 12), B, vc.ScaledIdentityCovariance(1, 1.0))
    with pytest.raises(
        ValueError, match=r"mask shape \(2, 5\) does not match values shape \(1, 5\)"
    ):
        vc.ObsWindow(jnp.zeros((1, 5)), jnp.ones((2, 5)))


@pytest.mark.parametrize("name", ["oi", "3dvar", "strong", "weak", "incremental"])
def test_nonfinite_background_and_empty_window_are_result_codes(key, name):
    model, H, B, R, background, obs = _linear_gaussian(key)
    method = eqx.filter_jit(_all_methods(model, H, B, R)[name])
    bad = background.at[0, 3].set(jnp.nan)
    a = method(bad, obs)
    assert a.result == vc.AnalysisResult.nonfinite_background
    assert "non-finite" in vc.AnalysisResult[a.result]
    assert jnp.array_equal(a.trajectory, bad, equal_nan=True)
    assert jnp.isnan(a.cost_before) and jnp.isnan(a.cost_after)

    empty = vc.ObsWindow(obs.values, jnp.zeros_like(obs.mask))
    a = method(background, empty)
    assert a.result == vc.AnalysisResult.no_observations
    assert "No observations" in vc.AnalysisResult[a.result]
    assert jnp.array_equal(a.trajectory, background)
    assert a.cost_before == a.cost_after == 0.0


def test_step_limit_is_a_result_code_not_an_exception(key):
    problem = vc.l96_window_problem(key, K=12, n_assim=6, n_total=10)
    kw = dict(
        obs_operator=problem.obs_operator, prior_cov=problem.prior_cov, obs_cov=problem.obs_cov
    )
    a = vc.StrongFourDVar(problem.model, **kw, max_steps=2)(problem.background, problem.obs)
    assert a.result == vc.AnalysisResult.max_steps_reached
    assert jnp.all(jnp.isfinite(a.trajectory))
