"""The ensemble methods as science: on a linear-Gaussian problem they are the Kalman
filter (exactly for the deterministic square-root filters, to sampling error for the
stochastic EnKF), localisation with an unbounded radius changes nothing, inflation and
rotations do what they say, and the gate sees a collapsed ensemble."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vardax_core as vc

N_STATE, SITES = 6, (0, 2, 3)


def _linear_model():
    A = -0.3 * jnp.eye(N_STATE) + 0.8 * (
        jnp.roll(jnp.eye(N_STATE), 1, 1) - jnp.roll(jnp.eye(N_STATE), -1, 1)
    )
    return vc.VectorFieldModel(lambda x: A @ x, N_STATE, 0.1, ring=True, dims=("site",))


def _problem(members: int, window: int = 1, seed: int = 0):
    """A background ensemble with exact moments (mean `xb`, covariance `Pb`), its window
    forecast and observations (`σ_o` 0.5 and 0.2 alternating, the window's own errors)."""
    model = _linear_model()
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    L = jax.random.normal(k1, (N_STATE, N_STATE)) * 0.4 + jnp.eye(N_STATE)
    Pb = L @ L.T
    xb = jax.random.normal(k2, (N_STATE,))
    raw = jax.random.normal(k3, (members, N_STATE))
    raw = raw - raw.mean(0)
    # whiten the draw so that its sample covariance is exactly Pb
    C = raw.T @ raw / (members - 1)
    E0 = xb + raw @ jnp.linalg.inv(jnp.linalg.cholesky(C)).T @ jnp.linalg.cholesky(Pb).T
    background = jax.vmap(lambda x: model.rollout(x, window))(E0)
    H = vc.SubsetObs(SITES, N_STATE)
    sigma = jnp.tile(jnp.array([0.5, 0.2, 0.5]), (window + 1, 1))
    y = jax.random.normal(jax.random.PRNGKey(seed + 7), (window + 1, len(SITES))) + 1.0
    mask = jnp.ones_like(y, bool).at[0].set(False)
    return model, H, background, vc.ObsWindow(y, mask, error_std=sigma)


def _kalman(mean, cov, H, y, sigma):
    Hm = np.asarray(jax.jacfwd(H)(mean))
    R = np.diag(np.asarray(sigma) ** 2)
    K = cov @ Hm.T @ np.linalg.inv(Hm @ cov @ Hm.T + R)
    return mean + K @ (y - Hm @ mean), (np.eye(len(mean)) - K @ Hm) @ cov


def _moments(E):
    E = np.asarray(E)
    return E.mean(0), np.cov(E.T, ddof=1)


def _methods(model, H, members, radius=1e6):
    B = vc.ScaledIdentityCovariance(N_STATE, 1.0)
    R = vc.ScaledIdentityCovariance(len(SITES), 1.0)
    loc = vc.Localisation.of(model, radius)
    return {
        "etkf": vc.ETKF(H, B, R, members=members),
        "etkf_rotated": vc.ETKF(H, B, R, members=members, rotate=True),
        "letkf": vc.LETKF(H, B, R, members=members, localisation=loc),
        "letkf_rotated": vc.LETKF(H, B, R, members=members, localisation=loc, rotate=True),
        "ienks": vc.IEnKS(model, H, B, R, members=members),
        "hybrid_envar": vc.HybridEnVar.build(H, B, R, members, loc, static_weight=0.0),
    }


@pytest.mark.parametrize(
    "name", ["etkf", "etkf_rotated", "letkf", "letkf_rotated", "ienks", "hybrid_envar"]
)
def test_deterministic_methods_are_the_kalman_filter(name):
    """At the window end (one observation time), the analysis mean and covariance are the
    Kalman filter's from the background ensemble's own mean and covariance: exactly (to
    1e-8; the hybrid's conjugate gradients to 1e-6) — for any N, here 10."""
    members = 10
    model, H, background, obs = _problem(members)
    method = _methods(model, H, members)[name]
    analysis = method(background, obs, jax.random.PRNGKey(3))
    assert analysis.result == vc.AnalysisResult.successful
    mean_b, cov_b = _moments(background[:, -1])
    mean_kf, cov_kf = _kalman(mean_b, cov_b, H, np.asarray(obs.values[-1]), obs.error_std[-1])
    mean_a, cov_a = _moments(analysis.ensemble[:, -1])
    tol = 1e-6 if name == "hybrid_envar" else 1e-8
    np.testing.assert_allclose(mean_a, mean_kf, atol=tol)
    np.testing.assert_allclose(analysis.trajectory[-1], mean_kf, atol=tol)
    np.testing.assert_allclose(cov_a, cov_kf, atol=tol)


def test_with_one_sigma_instead_the_analysis_differs():
    """The same ETKF with one σ for every observation is not the filter above: the
    check can fail."""
    model, H, background, obs = _problem(10)
    one_sigma = vc.ObsWindow(obs.values, obs.mask, error_std=jnp.full_like(obs.values, 0.5))
    analysis = _methods(model, H, 10)["etkf"](background, one_sigma)
    mean_b, cov_b = _moments(background[:, -1])
    mean_kf, _ = _kalman(mean_b, cov_b, H, np.asarray(obs.values[-1]), obs.error_std[-1])
    assert np.max(np.abs(np.asarray(analysis.trajectory[-1]) - mean_kf)) > 0.05


def test_stochastic_enkf_converges_to_the_kalman_filter():
    """The perturbed-observation EnKF with N = 4000 ≫ n = 6: mean within 0.03 and
    covariance within 0.05 of the Kalman filter's (sampling error ~1/√N); with N = 20 it is
    further off — the tolerance measures convergence."""

    def error(members):
        model, H, background, obs = _problem(members)
        B = vc.ScaledIdentityCovariance(N_STATE, 1.0)
        R = vc.ScaledIdentityCovariance(len(SITES), 1.0)
        analysis = vc.EnKF(H, B, R, members=members)(background, obs, jax.random.PRNGKey(5))
        mean_b, cov_b = _moments(background[:, -1])
        mean_kf, cov_kf = _kalman(mean_b, cov_b, H, np.asarray(obs.values[-1]), obs.error_std[-1])
        mean_a, cov_a = _moments(analysis.ensemble[:, -1])
        return np.max(np.abs(mean_a - mean_kf)), np.max(np.abs(cov_a - cov_kf))

    mean_err, cov_err = error(4000)
    assert mean_err < 0.03 and cov_err < 0.05
    assert max(error(20)) > max(mean_err, cov_err)


def test_four_dimensional_window_is_the_kalman_smoother():
    """Observations at two window times assimilated at once (the asynchronous ETKF, and the
    iEnKS over its window) give at the window end the Kalman filter of both times in
    sequence, on a linear model."""
    members = 12
    model, H, background, obs = _problem(members, window=2)
    M = np.asarray(jax.jacfwd(model.step)(jnp.zeros(N_STATE)))
    mean, cov = _moments(background[:, 1])
    mean, cov = _kalman(mean, cov, H, np.asarray(obs.values[1]), obs.error_std[1])
    mean, cov = M @ mean, M @ cov @ M.T
    mean_kf, cov_kf = _kalman(mean, cov, H, np.asarray(obs.values[2]), obs.error_std[2])
    for name in ("etkf", "ienks", "letkf"):
        analysis = _methods(model, H, members)[name](background, obs)
        mean_a, cov_a = _moments(analysis.ensemble[:, -1])
        np.testing.assert_allclose(mean_a, mean_kf, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(cov_a, cov_kf, atol=1e-8, err_msg=name)


def test_localisation_tapers_by_ring_distance():
    model = _linear_model()
    loc = vc.Localisation.of(model, 1.0)
    rho = loc.taper(jnp.array([[0.0]]))[:, 0]
    # 0.63 at the radius (DAPPER's half-width 1.82 radii), the shorter way round the ring
    np.testing.assert_allclose(rho[1], 0.6336, atol=1e-3)
    assert float(vc.gaspari_cohn(3.64 / 1.82 - 1e-9)) < 1e-9
    np.testing.assert_allclose(rho[1], rho[5], atol=1e-12)
    assert float(rho[0]) == 1.0 and float(vc.gaspari_cohn(2.0)) == 0.0
    wide = vc.Localisation(100.0, (40,), (1.0,))
    assert float(jnp.min(wide.taper(jnp.array([[0.0]])))) > 0.98


@pytest.mark.parametrize(
    "shape, spacing, radius",
    [((40,), (1.0,), 4.0), ((6, 8), (0.5, 1.0), 1.3), ((12, 10), (1.0, 1.0), 6.0)],
    ids=["ring", "grid", "wrapping"],
)
def test_localisation_sqrt_by_fft_is_the_dense_square_root(shape, spacing, radius):
    """On a periodic grid `L^{1/2}` applied by FFT is the symmetric square root of the dense
    `L` (its negative eigenvalues clipped: 'wrapping', a taper wider than the grid); off a
    periodic grid it is that dense matrix."""
    loc = vc.Localisation(radius, shape, spacing)
    v = jax.random.normal(jax.random.PRNGKey(1), (3, int(np.prod(shape))))
    dense = loc.correlation_sqrt()
    by_fft = loc.sqrt_operator()
    assert by_fft.matrix is None
    np.testing.assert_allclose(by_fft(v), v @ dense.T, atol=1e-10)
    np.testing.assert_allclose(by_fft(by_fft(v)), v @ (dense @ dense).T, atol=1e-10)
    flat = vc.Localisation(radius, shape, spacing, periodic=False).sqrt_operator()
    assert flat.spectrum is None and flat.matrix.shape == (v.shape[1],) * 2


def test_hybrid_envar_beyond_a_dense_localisation_matrix():
    """On a periodic 72 × 72 grid (5184 variables, beyond the dense `n × n` matrix the
    registry forms off a periodic grid) the hybrid with no static part and an unbounded
    radius is the ETKF's analysis mean (its conjugate gradients to 1e-6)."""
    members, shape = 6, (72, 72)
    n = shape[0] * shape[1]
    sites = tuple(range(0, n, 97))
    H = vc.SubsetObs(sites, n)
    B, R = vc.ScaledIdentityCovariance(n, 1.0), vc.ScaledIdentityCovariance(len(sites), 0.5)
    loc = vc.Localisation(1e6, shape, (1.0, 1.0))
    E = jax.random.normal(jax.random.PRNGKey(2), (members, 2, n))
    y = jax.random.normal(jax.random.PRNGKey(3), (2, len(sites)))
    obs = vc.ObsWindow(y, jnp.ones_like(y, bool).at[0].set(False))
    hybrid = vc.HybridEnVar.build(H, B, R, members, loc, static_weight=0.0)
    assert hybrid.localisation_sqrt.matrix is None
    got = hybrid(E, obs)
    want = vc.ETKF(H, B, R, members=members)(E, obs)
    assert got.result == vc.AnalysisResult.successful
    np.testing.assert_allclose(got.trajectory, want.trajectory, atol=1e-6)
    assert float(jnp.max(jnp.abs(got.trajectory - jnp.mean(E, axis=0)))) > 1e-2


def test_a_tight_radius_changes_the_letkf_and_keeps_far_variables():
    """A radius of 0.3 sites: a state variable 3 sites from every observation keeps its
    background."""
    members = 10
    model = vc.VectorFieldModel(lambda x: -0.1 * x, 8, 0.1, ring=True, dims=("site",))
    H = vc.SubsetObs((0,), 8)
    B, R = vc.ScaledIdentityCovariance(8, 1.0), vc.ScaledIdentityCovariance(1, 0.1)
    E = jax.random.normal(jax.random.PRNGKey(0), (members, 2, 8))
    obs = vc.ObsWindow(jnp.ones((2, 1)), jnp.array([[False], [True]]))
    letkf = vc.LETKF(H, B, R, members=members, localisation=vc.Localisation.of(model, 0.3))
    a = letkf(E, obs)
    np.testing.assert_allclose(a.ensemble[:, -1, 4], E[:, -1, 4], atol=1e-12)
    assert float(jnp.max(jnp.abs(a.ensemble[:, -1, 0] - E[:, -1, 0]))) > 1e-3


def test_inflation_and_rtps():
    E_b = jax.random.normal(jax.random.PRNGKey(1), (8, 3, 5))
    E_a = 0.3 * E_b + 0.1
    inflated = vc.Inflation(1.5)(E_b, E_a)
    np.testing.assert_allclose(inflated.mean(0), E_a.mean(0), atol=1e-12)
    np.testing.assert_allclose(inflated.std(0), 1.5 * E_a.std(0), rtol=1e-12)
    relaxed = vc.Inflation(rtps=1.0)(E_b, E_a)
    np.testing.assert_allclose(relaxed.std(0), E_b.std(0), rtol=1e-10)
    with pytest.raises(ValueError, match="factor must be >= 1"):
        vc.Inflation(0.9)


def test_rotation_keeps_the_mean_and_covariance():
    Q = vc.mean_preserving_rotation(jax.random.PRNGKey(2), 7)
    np.testing.assert_allclose(Q @ jnp.ones(7), jnp.ones(7), atol=1e-12)
    np.testing.assert_allclose(Q @ Q.T, jnp.eye(7), atol=1e-12)
    assert float(jnp.max(jnp.abs(Q - jnp.eye(7)))) > 0.1


def test_cycle_keys_depend_on_seed_and_index_only():
    a, b = vc.cycle_key(3, 10, 1), vc.cycle_key(3, 10, 1)
    assert jnp.array_equal(jax.random.key_data(a), jax.random.key_data(b)) or jnp.array_equal(a, b)
    assert not jnp.array_equal(vc.cycle_key(3, 11, 1), a)
    assert not jnp.array_equal(vc.cycle_key(4, 10, 1), a)


def test_gate_fails_a_collapsed_ensemble_and_names_it():
    model, H, background, obs = _problem(10)
    B = vc.ScaledIdentityCovariance(N_STATE, 1.0)
    R = vc.ScaledIdentityCovariance(len(SITES), 1.0)
    method = vc.ETKF(H, B, R, members=10)
    gate = vc.Gate.for_method(method, min_spread=0.05)
    ok = gate(background, method(background, obs), obs)
    assert bool(ok.passed) and float(ok.spread) > 0.05
    collapsed = background.mean(0) + 1e-4 * (background - background.mean(0))
    report = gate(collapsed, method(collapsed, obs), obs)
    assert not bool(report.spread_ok) and not bool(report.passed)
    assert "collapsed" in gate.explain(report)
    assert "spread" in vc.failed_checks(report.failures)


def test_ensemble_chi2_measures_spread_against_error():
    """Innovations drawn from `H Pₑ Hᵀ + R` give χ²/dof near 1; an ensemble 10× too
    narrow for its error gives far more."""
    members, n_obs = 200, 40
    H = vc.SubsetObs(range(n_obs), n_obs)
    B = vc.ScaledIdentityCovariance(n_obs, 1.0)
    R = vc.ScaledIdentityCovariance(n_obs, 1.0)
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    truth_error = jax.random.normal(k1, (n_obs,)) * jnp.sqrt(2.0)  # spread² 1 + R 1
    E = jax.random.normal(k2, (members, 2, n_obs))
    y = jnp.stack([jnp.zeros(n_obs), truth_error])
    obs = vc.ObsWindow(y, jnp.ones_like(y, bool).at[0].set(False))
    method = vc.ETKF(H, B, R, members=members)
    gate = vc.Gate.for_method(method)
    right = float(gate(E, method(E, obs), obs).chi2_dof)
    narrow = 0.1 * E
    wrong = float(gate(narrow, method(narrow, obs), obs).chi2_dof)
    assert 0.6 < right < 1.5 and wrong > 1.6


def test_positions_of_observation_operators():
    op = vc.InterpolationObs.at(np.array([[1.25, 3.5], [0.0, 7.75]]), (4, 8))
    np.testing.assert_allclose(op.positions((4, 8)), [[1.25, 3.5], [0.0, 7.75]], atol=1e-12)
    np.testing.assert_allclose(vc.SubsetObs((9, 2), 16).positions((4, 4)), [[2, 1], [0, 2]])
    assert vc.FunctionObs(lambda x: x[:2], 4, 2).positions((4,)) is None


def test_shape_errors_name_the_argument():
    model, H, background, obs = _problem(10)
    method = _methods(model, H, 10)["etkf"]
    with pytest.raises(ValueError, match=r"background ensemble has shape \(9, 2, 6\)"):
        method(background[:9], obs)
    with pytest.raises(ValueError, match="members must be >= 2"):
        vc.ETKF(H, method.prior_cov, method.obs_cov, members=1)


def test_no_observations_hands_back_the_background_ensemble():
    model, H, background, obs = _problem(10)
    empty = vc.ObsWindow(obs.values, jnp.zeros_like(obs.mask))
    for name, method in _methods(model, H, 10).items():
        a = method(background, empty)
        assert a.result == vc.AnalysisResult.no_observations, name
        np.testing.assert_array_equal(a.ensemble, background)


def test_newton_schulz_square_roots_match_the_eigendecomposition():
    """`sqrt_pair` of `I + C` (C ≥ 0, ill-conditioned up to 1e6) is `A^{±1/2}` to 1e-10."""
    from vardax_core._ensemble import sqrt_pair

    for scale in (0.1, 1e3, 1e6):
        G = jax.random.normal(jax.random.PRNGKey(int(scale)), (12, 30))
        A = jnp.eye(12) + scale * G @ G.T / 30
        lam, V = jnp.linalg.eigh(A)
        root, inverse = sqrt_pair(A)
        np.testing.assert_allclose(root, (V * jnp.sqrt(lam)) @ V.T, rtol=1e-10, atol=1e-10 * scale)
        np.testing.assert_allclose(inverse, (V / jnp.sqrt(lam)) @ V.T, atol=1e-10)
