"""The learned methods' science: FourDVarNet (layouts, priors, gradient modes), the
one-step adjoint, the amortized posterior, the Laplace oracle, the agreement gate and
simulation-based calibration. Small problems: the must-show numbers live in bench/."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import vardax_core as vc

jax.config.update("jax_enable_x64", True)

L63_MEAN = jnp.array([0.0, 0.0, 23.5])
L63_SCALE = jnp.sqrt(jnp.array([62.0, 77.0, 73.0]))


def _l63_windows(seed, n, window=10):
    model = vc.Lorenz63()
    H = vc.SubsetObs(range(3), 3)
    B = vc.DiagonalCovariance(jnp.full(3, 4.0))
    return vc.simulate_windows(
        model,
        H,
        1.0,
        jax.random.PRNGKey(seed),
        n,
        window,
        obs_every=2,
        spinup_steps=300,
        background_cov=B,
    )


def _net(mode="unrolled", K=4, prior="bilinear", T=11):
    return vc.FourDVarNet1D(
        3,
        T,
        key=jax.random.PRNGKey(0),
        n_solver_steps=K,
        gradient_mode=mode,
        prior=prior,
        latent_dim=6,
        hidden_dim=8,
        mean=L63_MEAN,
        scale=L63_SCALE,
    )


# --- layouts and priors ----------------------------------------------------------------


@pytest.mark.parametrize("prior", ["bilinear", "conv", "mlp", "identity"])
def test_fourdvarnet1d_shapes_and_priors(prior):
    batch = _l63_windows(0, 3)
    net = _net(prior=prior)
    x = net(batch)
    assert x.shape == batch.target.shape and jnp.all(jnp.isfinite(x))
    # without a background the solver starts from the observations (climatology elsewhere)
    no_bg = vc.Batch1D(batch.input, batch.mask, batch.target)
    assert jnp.all(jnp.isfinite(net(no_bg)))


def test_fourdvarnet2d_fields_and_multivariate():
    key = jax.random.PRNGKey(1)
    field = jax.random.normal(key, (2, 3, 8, 8))  # (B, T, H, W)
    mask = jax.random.bernoulli(key, 0.3, field.shape)
    net = vc.FourDVarNet2D((8, 8), 3, key=key, latent_dim=4, hidden_dim=4, n_solver_steps=2)
    out = net(vc.Batch2D(field, mask, field))
    assert out.shape == field.shape and jnp.all(jnp.isfinite(out))
    multi = jax.random.normal(key, (2, 3, 2, 8, 8))  # (B, T, C, H, W)
    net = vc.FourDVarNet2D((2, 8, 8), 3, key=key, latent_dim=4, hidden_dim=4, n_solver_steps=2)
    mmask = jax.random.bernoulli(key, 0.3, multi.shape)
    out = net(vc.Batch2DMultivar(multi, mmask, multi))
    assert out.shape == multi.shape and jnp.all(jnp.isfinite(out))
    prior = vc.BilinAEPrior2DMultivar(3, 2, 4, key=key)
    assert prior(multi[0].reshape(6, 8, 8)).shape == (6, 8, 8)


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="gradient_mode"):
        _net(mode="backprop")
    with pytest.raises(ValueError, match="prior"):
        _net(prior="gaussian")
    with pytest.raises(ValueError, match="n_solver_steps"):
        _net(K=1)


# --- gradient modes --------------------------------------------------------------------


def test_gradient_modes_share_the_forward_pass():
    batch = _l63_windows(0, 4)
    outs = [_net(mode)(batch) for mode in vc.GRADIENT_MODES]
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], rtol=1e-10, atol=1e-10)


def _grads(net, batch):
    g = eqx.filter_grad(lambda n: vc.fourdvarnet_loss(n, batch)[0])(net)
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(g)])


def test_one_step_gradient_is_the_last_steps():
    """One-step mode differentiates exactly the last solver step at the frozen iterate:
    equal to back-propagating through the unrolled loop with the first K−1 steps' outputs
    held constant."""
    batch = jax.tree_util.tree_map(lambda a: a[:2], _l63_windows(0, 4))
    net = _net("one_step", K=3)
    g_one = _grads(net, batch)

    def loss(n):
        frozen = jax.tree_util.tree_map(
            lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, n
        )

        def one(y, m, b):
            data = (y, m, None)
            carry = frozen._initial(b)
            for _ in range(n.n_solver_steps - 1):
                carry = frozen._step(carry, data)
            carry = jax.tree_util.tree_map(jax.lax.stop_gradient, carry)
            return n.denormalise(n._step(carry, data)[0])

        x = jax.vmap(one)(batch.input, batch.mask, batch.background)
        zt = n.normalise(batch.target)
        mse = jnp.mean((n.normalise(x) - zt) ** 2)
        return mse + vc._training.PRIOR_LOSS_WEIGHT * jnp.mean(jax.vmap(n.prior_cost)(zt))

    g_ref = jnp.concatenate(
        [jnp.ravel(a) for a in jax.tree_util.tree_leaves(eqx.filter_grad(loss)(net))]
    )
    np.testing.assert_allclose(g_one, g_ref, rtol=1e-8, atol=1e-12)
    g_unrolled = _grads(dataclasses.replace(net, gradient_mode="unrolled"), batch)
    assert not np.allclose(g_one, g_unrolled)  # it is an approximation of the full gradient
    cos = jnp.vdot(g_one, g_unrolled) / jnp.linalg.norm(g_one) / jnp.linalg.norm(g_unrolled)
    assert cos > 0.5


def test_one_step_adjoint_is_exact_for_newton():
    """For a superlinear iteration the one-step gradient is the true derivative of the
    fixed point (Bolte et al. 2023): Newton's iteration for √a."""

    def sqrt(a, adjoint):
        newton = lambda y, a: 0.5 * (y + a / y)  # noqa: E731
        solver = optx.FixedPointIteration(rtol=1e-12, atol=1e-12)
        return optx.fixed_point(newton, solver, jnp.array(1.0), a, adjoint=adjoint).value

    a = jnp.array(7.0)
    assert abs(sqrt(a, vc.OneStepAdjoint()) - jnp.sqrt(a)) < 1e-12
    g = jax.grad(lambda a: sqrt(a, vc.OneStepAdjoint()))(a)
    np.testing.assert_allclose(g, 0.5 / jnp.sqrt(a), rtol=1e-10)
    # and a linear contraction y = y/2 + a shows the known bias: ∂f/∂a = 1 instead of 2
    lin = optx.fixed_point(
        lambda y, a: 0.5 * y + a,
        optx.FixedPointIteration(rtol=1e-12, atol=1e-12),
        jnp.array(0.0),
        a,
        adjoint=vc.OneStepAdjoint(),
        max_steps=200,
    )
    np.testing.assert_allclose(lin.value, 2 * a, rtol=1e-10)


@pytest.mark.parametrize("mode", vc.GRADIENT_MODES)
def test_training_in_every_mode_lowers_the_loss(mode):
    """Every mode trains (the validation error falls); unrolled and one-step analyses beat
    the background after 40 steps. The implicit mode's gradient (the implicit function
    theorem at the last step, as if it were a fixed point) learns more slowly here: only its
    loss is asserted."""
    train, val = _l63_windows(10, 128), _l63_windows(11, 32)
    net, history = vc.fit(
        _net(mode), train, steps=40, learning_rate=1e-2, batch_size=32, validation=val, every=20
    )
    assert history[-1]["val_mse"] < history[0]["val_mse"]
    x = net(val)
    assert jnp.all(jnp.isfinite(x))
    rmse = float(vc.rmse(x, val.target))
    rmse_bg = float(vc.rmse(val.background, val.target))
    if mode != "implicit":
        assert rmse < 0.85 * rmse_bg, (rmse, rmse_bg)


def test_fit_names_a_diverged_loss():
    train = _gaussian_problem(16, jax.random.PRNGKey(0))
    post = vc.amortized_posterior((2, 2), (2, 2), key=jax.random.PRNGKey(3), hidden_dim=8)
    with pytest.raises(FloatingPointError, match="learning rate"):
        vc.fit(post, train, steps=40, learning_rate=1e30, every=20)


# --- amortized posterior and SBC -------------------------------------------------------


def _gaussian_problem(n, key, sigma=0.5):
    """x ~ N(0, I) over a (2, 2) window, y = x + N(0, σ²), every entry observed: the
    posterior is N(y/(1+σ²), σ²/(1+σ²)) entry by entry."""
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (n, 2, 2))
    y = x + sigma * jax.random.normal(ky, x.shape)
    return vc.Batch1D(input=y, mask=jnp.ones_like(y, bool), target=x)


def _exact_sampler(std_factor, sigma=0.5):
    def sample(batch, key, n):
        mean = batch.input / (1 + sigma**2)
        std = std_factor * sigma / jnp.sqrt(1 + sigma**2)
        noise = jax.random.normal(key, (mean.shape[0], n, *mean.shape[1:]))
        return mean[:, None] + std * noise

    return sample


def test_sbc_passes_the_exact_posterior_and_catches_an_overconfident_one():
    cases = _gaussian_problem(400, jax.random.PRNGKey(0))
    calibrated = vc.simulation_based_calibration(
        _exact_sampler(1.0), cases.target, cases, jax.random.PRNGKey(1), n_samples=49
    )
    over = vc.simulation_based_calibration(
        _exact_sampler(0.4), cases.target, cases, jax.random.PRNGKey(1), n_samples=49
    )
    assert calibrated.passed, calibrated.summary()
    assert not over.passed and "NOT calibrated" in over.summary()
    assert len(calibrated.names) >= 4  # several test statistics


def test_trained_amortized_posterior_is_calibrated_and_shrinking_it_fails():
    """The seeds' "confident wrong answer": the amortized posterior trained by NLL passes
    SBC; the same network with its variances divided by 25 fails it."""
    train = _gaussian_problem(2048, jax.random.PRNGKey(2))
    post = vc.amortized_posterior(
        (2, 2), (2, 2), key=jax.random.PRNGKey(3), context_dim=16, hidden_dim=32
    )
    post, _ = vc.fit(post, train, steps=600, learning_rate=3e-3, batch_size=256, every=300)
    test = _gaussian_problem(300, jax.random.PRNGKey(4))
    mean, std = post.posterior(test)
    np.testing.assert_allclose(jnp.mean(std), 0.5 / jnp.sqrt(1.25), rtol=0.15)
    report = vc.simulation_based_calibration(
        post.sample, test.target, test, jax.random.PRNGKey(5), n_samples=49
    )
    assert report.passed, report.summary()

    def overconfident(batch, key, n):
        m, s = post.posterior(batch)
        noise = jax.random.normal(key, (m.shape[0], n, *m.shape[1:]))
        return m[:, None] + (s / 5)[:, None] * noise

    bad = vc.simulation_based_calibration(
        overconfident, test.target, test, jax.random.PRNGKey(5), n_samples=49
    )
    assert not bad.passed, bad.summary()


def test_rank_uniformity_p_values():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 100, size=(3, 2000))
    piled = np.concatenate([uniform[:, :1000], np.zeros((3, 1000), int)], axis=1)
    assert np.all(vc.rank_uniformity(uniform, 99) > 1e-3)
    assert np.all(vc.rank_uniformity(piled, 99) < 1e-10)


# --- the oracle ------------------------------------------------------------------------


def _oracle_problem(obs_rows):
    model = vc.Lorenz63()
    H = vc.SubsetObs([0, 2], 3)
    B = vc.DiagonalCovariance(jnp.array([2.0, 3.0, 1.5]))
    R = vc.ScaledIdentityCovariance(2, 0.5)
    truth = vc.nature_run(model, jax.random.PRNGKey(0), 8, 500)
    obs = vc.observe(H, truth, 0.7, jax.random.PRNGKey(1))
    mask = jnp.zeros_like(obs.mask).at[jnp.array(obs_rows)].set(True)
    background = model.rollout(truth[0] + jnp.array([1.0, -1.0, 0.5]), 8)
    oracle = vc.StrongFourDVar(model, H, B, R)
    return oracle, background, vc.ObsWindow(obs.values, mask), H, B, R


def test_laplace_posterior_is_the_blue_when_only_the_start_is_observed():
    oracle, background, obs, H, B, R = _oracle_problem([0])
    post = vc.laplace_posterior(oracle, background, obs)
    Hm, Bm, Rm = H.linearise(background[0]).as_matrix(), B.as_matrix(), R.as_matrix()
    K = Bm @ Hm.T @ jnp.linalg.inv(Hm @ Bm @ Hm.T + Rm)
    blue_cov = (jnp.eye(3) - K @ Hm) @ Bm
    blue_mean = background[0] + K @ (obs.values[0] - Hm @ background[0])
    np.testing.assert_allclose(post.cov0, blue_cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post.mean[0], blue_mean, rtol=1e-5, atol=1e-5)
    # later times: the covariance carried by the tangent-linear model
    M = jax.jacfwd(lambda x: oracle.model.rollout(x, 8)[5])(post.mean[0])
    np.testing.assert_allclose(post.std[5], jnp.sqrt(jnp.diag(M @ blue_cov @ M.T)), rtol=1e-8)


def test_posterior_agreement_passes_the_oracle_and_fails_a_far_analysis():
    oracle, background, obs, *_ = _oracle_problem([2, 4, 6, 8])
    agreement = vc.PosteriorAgreement(oracle, k=3.0, min_fraction=0.9, at="all")
    post = vc.laplace_posterior(oracle, background, obs)
    passed, max_sigma, fraction, oracle_mean = agreement(background, post.mean, obs)
    np.testing.assert_allclose(oracle_mean, post.mean)
    assert bool(passed) and float(max_sigma) < 1e-3 and float(fraction) == 1.0
    far = post.mean + 5 * post.std
    passed, max_sigma, fraction, _ = agreement(background, far, obs)
    assert not bool(passed) and abs(float(max_sigma) - 5) < 1e-6 and float(fraction) == 0.0


def test_gate_with_an_oracle_reports_and_rejects():
    oracle, background, obs, H, B, R = _oracle_problem([2, 4, 6, 8])
    gate = vc.Gate(H, B, R, increments_at_start=True, oracle=vc.PosteriorAgreement(oracle, k=3.0))
    post = vc.laplace_posterior(oracle, background, obs)
    good = vc.Analysis(
        post.mean, jnp.array(0.0), jnp.array(0.0), jnp.array(1), vc.AnalysisResult.successful
    )
    rep = gate(background, good, obs)
    assert bool(rep.passed) and float(rep.oracle_fraction) == 1.0
    bad = eqx.tree_at(lambda a: a.trajectory, good, post.mean + 6 * post.std)
    rep = gate(background, bad, obs)
    assert not bool(rep.passed) and float(rep.oracle_max_sigma) > 5.9
    plain = vc.Gate(H, B, R, increments_at_start=True)(background, bad, obs)
    assert np.isnan(float(plain.oracle_max_sigma))
    # what the cycle hands on: the background, or with the oracle fallback the oracle's
    np.testing.assert_allclose(vc.accepted_trajectory(background, bad, obs, rep), background)
    fallback = vc.Gate(
        H,
        B,
        R,
        increments_at_start=True,
        oracle=vc.PosteriorAgreement(oracle, k=3.0),
        oracle_fallback=True,
    )
    rep = fallback(background, bad, obs)
    np.testing.assert_allclose(vc.accepted_trajectory(background, bad, obs, rep), post.mean)
    rep = fallback(background, good, obs)
    np.testing.assert_allclose(vc.accepted_trajectory(background, good, obs, rep), post.mean)


# --- in the analysis-step protocol -----------------------------------------------------


def test_learned_methods_follow_the_protocol():
    model = vc.Lorenz63()
    H = vc.SubsetObs(range(3), 3)
    B, R = vc.DiagonalCovariance(jnp.full(3, 4.0)), vc.ScaledIdentityCovariance(3, 1.0)
    batch = _l63_windows(3, 2)
    method = vc.FourDVarNetMethod(_net(), H, B, R)
    obs = vc.ObsWindow(batch.input[0], batch.mask[0])
    a = method(batch.background[0], obs)
    assert a.trajectory.shape == (11, 3) and a.result == vc.AnalysisResult.successful
    assert int(a.iterations) == 4
    with pytest.raises(ValueError, match="windows of 11 times"):
        method(jnp.zeros((21, 3)), vc.ObsWindow(jnp.zeros((21, 3))))
    post = vc.amortized_posterior(
        (11, 3),
        (11, 3),
        key=jax.random.PRNGKey(0),
        use_background=True,
        mean=L63_MEAN,
        scale=L63_SCALE,
    )
    am = vc.AmortizedMethod(post, H, B, R)
    a = am(batch.background[0], obs)
    assert a.trajectory.shape == (11, 3) and int(a.iterations) == 0
    assert am.posterior_std(batch.background[0], obs).shape == (11, 3)
    # a non-finite background is carried, as for every method
    nan_bg = batch.background[0].at[0, 0].set(jnp.nan)
    assert method(nan_bg, obs).result == vc.AnalysisResult.nonfinite_background
    del model


def test_fourdvarnet2d_learns_a_qg_field_through_point_observations():
    """FourDVarNet2D in the protocol on a 16×16 QG window observed at scattered points
    (`BilinearObs`): a few training steps and its analysis beats the background."""
    model = vc.QuasiGeostrophic(ny=16, nx=16, forcing_k=2, dt=0.05)
    H = vc.BilinearObs(vc.station_points((16, 16), 60, 0), (16, 16))
    B = vc.SpectralCovariance((16, 16), 2.0, 0.02)
    R = vc.ScaledIdentityCovariance(H.obs_size, 0.01**2)
    windows = vc.simulate_windows(
        model,
        H,
        0.01,
        jax.random.PRNGKey(0),
        32,
        4,
        obs_every=2,
        spinup_steps=100,
        background_cov=B,
    )
    std = float(jnp.std(windows.target))
    net = vc.FourDVarNet2D(
        (16, 16),
        5,
        key=jax.random.PRNGKey(1),
        latent_dim=8,
        hidden_dim=8,
        n_solver_steps=4,
        scale=std,
        obs_scale=std,
    )
    train = jax.tree_util.tree_map(lambda a: a[:12], windows)
    test = jax.tree_util.tree_map(lambda a: a[12:], windows)
    net, _ = vc.fit(
        net, train, steps=40, learning_rate=1e-2, batch_size=12, obs_operator=H, every=20
    )
    method = vc.FourDVarNetMethod(net, H, B, R)
    analyses = jax.vmap(lambda b, y, m: method(b, vc.ObsWindow(y, m)).trajectory)(
        test.background, test.input, test.mask
    )
    assert analyses.shape == test.target.shape
    rmse, rmse_bg = vc.rmse(analyses, test.target), vc.rmse(test.background, test.target)
    assert float(rmse) < 0.9 * float(rmse_bg), (float(rmse), float(rmse_bg))
