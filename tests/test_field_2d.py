"""The 2-D pieces of the core: the QG model (derivatives, conservation-free sanity,
chaos), the matrix-free spectral B, bilinear observations and their networks, and the
methods and gate on them agreeing with their dense counterparts."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import vardax_core as vc

jax.config.update("jax_enable_x64", True)

SHAPE = (16, 16)


@pytest.fixture(scope="module")
def qg():
    return vc.QuasiGeostrophic(ny=16, nx=16, forcing_k=2, dt=0.05)


@pytest.fixture(scope="module")
def qg_state(qg):
    return vc.nature_run(qg, jax.random.PRNGKey(0), 0, 400)[-1]


def test_qg_tangent_linear_and_adjoint(qg, qg_state):
    def f(x):
        return qg.rollout(x, 10)[-1]

    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    dx = qg.perturbation(k1, 1.0)
    dy = jax.random.normal(k2, qg_state.shape)
    assert vc.tangent_linear_test(f, qg_state, dx) < 1e-6
    remainders = vc.taylor_test(f, qg_state, dx, epsilons=(1e-1, 1e-2, 1e-3))
    ratios = remainders[:-1] / remainders[1:]
    assert jnp.all((ratios > 50) & (ratios < 200)), ratios  # second order: ×100 per decade
    assert vc.adjoint_test(f, qg_state, dx, dy) < 1e-12


def test_qg_physics(qg, qg_state):
    # the PV inversion: q = ∇²ψ − κ²ψ of a single Fourier mode
    y, x = np.meshgrid(*(2 * np.pi * np.arange(n) / n for n in SHAPE), indexing="ij")
    psi = np.sin(3 * x) * np.cos(2 * y)
    q = qg.potential_vorticity(jnp.asarray(psi.ravel()))
    np.testing.assert_allclose(q, -(9 + 4 + qg.kappa2) * psi, atol=1e-10)
    # with no forcing, drag, β or damping a single mode is a steady solution (J(ψ, q) = 0)
    inviscid = vc.QuasiGeostrophic(
        ny=16, nx=16, forcing=0.0, drag=0.0, beta=0.0, damping=1e-9, forcing_k=2
    )
    tendency = inviscid.vector_field(jnp.asarray(psi.ravel()))
    assert float(jnp.abs(tendency).max()) < 1e-8
    # β makes the mode a Rossby wave travelling west: ψ_t = β k_x ψ_x / (K² + κ²) ...
    rossby = vc.QuasiGeostrophic(
        ny=16, nx=16, forcing=0.0, drag=0.0, beta=1.0, damping=1e-9, forcing_k=2
    )
    psi_x = 3 * np.cos(3 * x) * np.cos(2 * y)
    expected = psi_x / (9 + 4 + rossby.kappa2)
    np.testing.assert_allclose(
        rossby.vector_field(jnp.asarray(psi.ravel())), expected.ravel(), atol=1e-10
    )


def test_qg_is_chaotic_and_bounded():
    qg = vc.QuasiGeostrophic(ny=32, nx=32)
    truth = vc.nature_run(qg, jax.random.PRNGKey(0), 400, 2000)
    assert bool(jnp.all(jnp.isfinite(truth)))
    assert 0.05 < float(truth.std()) < 2.0
    x = truth[0] + qg.perturbation(jax.random.PRNGKey(3), 1e-4)
    error = jnp.sqrt(jnp.mean((qg.rollout(x, 400) - truth) ** 2, axis=1))
    assert float(error[-1]) > 4 * float(error[0])  # small errors grow


def test_qg_rejects_bad_grids():
    with pytest.raises(ValueError, match="even grid sizes"):
        vc.QuasiGeostrophic(ny=15, nx=16)
    with pytest.raises(ValueError, match="forcing_k"):
        vc.QuasiGeostrophic(ny=16, nx=16, forcing_k=8)


def test_spectral_covariance_is_a_covariance():
    B = vc.SpectralCovariance(SHAPE, length_scale=2.0, variance=0.3)
    C = np.asarray(B.as_matrix())
    np.testing.assert_allclose(C, C.T, atol=1e-12)
    assert np.linalg.eigvalsh(C).min() > 0
    np.testing.assert_allclose(np.diag(C), 0.3, rtol=1e-12)
    np.testing.assert_allclose(B.diagonal(), np.diag(C))
    L = np.asarray(B.sqrt_operator().as_matrix())
    np.testing.assert_allclose(L @ L.T, C, atol=1e-12)
    v = np.random.default_rng(0).normal(size=B.size)
    np.testing.assert_allclose(B.inv_sqrt_mv(B.sqrt_mv(v)), v, rtol=1e-7, atol=1e-7)
    # a Gaussian correlation: neighbours one length scale apart correlate at about e^{-1/2}
    assert abs(C[0, 2] / C[0, 0] - np.exp(-0.5)) < 0.02
    # homogeneous: every point's correlation with its right neighbour is the same
    right = [C[i * 16 + j, i * 16 + (j + 1) % 16] for i in range(16) for j in range(16)]
    np.testing.assert_allclose(right, right[0], rtol=1e-10)
    # on a ring (Lorenz-96) it is the dense periodic Gaussian B up to the distance used
    # (minimum image here, the chord there)
    ring = np.asarray(vc.SpectralCovariance(40, 2.0, 0.5).as_matrix())
    dense = np.asarray(vc.periodic_covariance(40, 2.0, 0.5).as_matrix())
    assert np.abs(ring - dense).max() < 0.01


def test_bilinear_observations():
    rng = np.random.default_rng(1)
    points = vc.station_points(SHAPE, 30, seed=2)
    H = vc.BilinearObs(points, SHAPE)
    # exact on a plane inside a cell away from the periodic seam
    y, x = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    plane = 0.3 * y - 0.7 * x + 2.0
    inner = vc.BilinearObs([[3.25, 4.5], [10.0, 7.75]], SHAPE)
    np.testing.assert_allclose(
        inner(jnp.asarray(plane.ravel())), [0.3 * 3.25 - 0.7 * 4.5 + 2, 0.3 * 10 - 0.7 * 7.75 + 2]
    )
    # grid points pick the grid value; the weights sum to one
    grid = vc.BilinearObs(vc.gridded_points(SHAPE, 4, 1), SHAPE)
    field = rng.normal(size=256)
    np.testing.assert_allclose(grid(jnp.asarray(field)), field.reshape(16, 16)[1::4, 1::4].ravel())
    np.testing.assert_allclose(H(jnp.ones(256)), 1.0)
    # the adjoint (what 3DVar and 4DVar use) passes the dot-product test
    dx, dy = jnp.asarray(field), jnp.asarray(rng.normal(size=30))
    assert vc.adjoint_test(H, dx, dx, dy) < 1e-13
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        vc.BilinearObs(np.zeros((3, 3)), SHAPE)


def test_swaths_are_seen_one_track_at_a_time():
    points, track = vc.swath_points(SHAPE, tracks=4, width=3, spacing=1.0, angle=60.0)
    assert points.shape == (4 * 3 * 16, 2) and set(track) == {0, 1, 2, 3}
    assert np.all((points >= 0) & (points < 16))
    seen = vc.swath_schedule(track, n_times=13, every=2)
    assert not seen[1].any()  # no pass between observation times
    for k, t in enumerate(range(0, 13, 2)):
        np.testing.assert_array_equal(seen[t], track == k % 4)


def _problem(key, B, H):
    x = jnp.asarray(vc.SpectralCovariance(SHAPE, 3.0).sqrt_mv(jax.random.normal(key, (256,))))
    y = H(x) + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (H.obs_size,))
    mask = jnp.ones(H.obs_size, bool).at[3].set(False)
    return jnp.zeros((1, 256)), vc.ObsWindow(y[None], mask[None])


def test_spectral_b_gives_the_dense_b_analysis_and_gate():
    """3DVar with B applied by FFTs equals 3DVar and the BLUE with the same B as a dense
    matrix; the gate's χ² by conjugate gradients equals its Cholesky value."""
    B = vc.SpectralCovariance(SHAPE, length_scale=2.0, variance=0.5)
    dense = vc.DenseCovariance(B.as_matrix())
    H = vc.BilinearObs(vc.station_points(SHAPE, 40, seed=3), SHAPE)
    R = vc.ScaledIdentityCovariance(40, 0.01)
    background, obs = _problem(jax.random.PRNGKey(4), B, H)
    spectral = vc.ThreeDVar(H, B, R, max_steps=500)(background, obs)
    matrix = vc.ThreeDVar(H, dense, R, max_steps=500)(background, obs)
    blue = vc.OptimalInterpolation(H, dense, R)(background, obs)
    np.testing.assert_allclose(spectral.trajectory, blue.trajectory, atol=1e-5)
    np.testing.assert_allclose(spectral.trajectory, matrix.trajectory, atol=1e-5)
    cg = vc.Gate(H, B, R)(background, spectral, obs)
    chol = vc.Gate(H, dense, R)(background, spectral, obs)
    np.testing.assert_allclose(cg.chi2_dof, chol.chi2_dof, rtol=1e-8)
    np.testing.assert_allclose(cg.increment_max_sigma, chol.increment_max_sigma, rtol=1e-10)
    assert isinstance(vc.innovation_solver(B, 40), lx.CG) and not isinstance(
        vc.innovation_solver(dense, 40), lx.CG
    )


def test_incremental_4dvar_on_qg_fits_the_observations(qg, qg_state):
    """On a QG window with bilinear station observations, incremental 4DVar with a spectral
    B pulls a perturbed background towards the truth (and lowers its cost)."""
    n_steps = 10
    truth = qg.rollout(qg_state, n_steps)
    H = vc.BilinearObs(vc.station_points(SHAPE, 60, seed=5), SHAPE)
    obs = vc.observe(H, truth, 0.01, jax.random.PRNGKey(6), obs_every=5)
    B = vc.SpectralCovariance(SHAPE, length_scale=2.5, variance=float(jnp.var(truth)) * 0.04)
    x_b = qg_state + B.sqrt_mv(jax.random.normal(jax.random.PRNGKey(7), qg_state.shape))
    background = qg.rollout(x_b, n_steps)
    method = vc.IncrementalFourDVar(
        qg, H, B, vc.ScaledIdentityCovariance(60, 1e-4), n_outer=3, n_inner=40
    )
    analysis = method(background, obs)
    before = float(jnp.sqrt(jnp.mean((background - truth) ** 2)))
    after = float(jnp.sqrt(jnp.mean((analysis.trajectory - truth) ** 2)))
    assert after < 0.5 * before, (before, after)
    assert float(analysis.cost_after) < float(analysis.cost_before)
