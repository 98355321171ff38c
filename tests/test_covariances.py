import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vardax_core as vc


def _covs():
    traj = vc.nature_run(vc.Lorenz96(K=8), jax.random.PRNGKey(0), 500, 200)
    return {
        "identity": vc.ScaledIdentityCovariance(8, 2.5),
        "diagonal": vc.DiagonalCovariance(jnp.linspace(0.5, 3.0, 8)),
        "gaussian-ring": vc.periodic_covariance(8, 1.5, 2.0),
        "matern-ring": vc.periodic_covariance(8, 2.0, 1.0, kind="matern32"),
        "climatological": vc.climatological_covariance(traj, 0.1),
    }


@pytest.mark.parametrize("name", list(_covs()))
def test_square_root_and_inverse(name):
    cov = _covs()[name]
    C = cov.as_matrix()
    L = cov.sqrt_operator().as_matrix()
    assert jnp.allclose(L @ L.T, C, atol=1e-10)
    v = jax.random.normal(jax.random.PRNGKey(1), (8,))
    assert jnp.allclose(cov.sqrt_mv(cov.inv_sqrt_mv(v)), v, atol=1e-8)
    assert jnp.allclose(cov.sqrt_T_mv(v), L.T @ v)
    assert jnp.isclose(cov.inv_quad(v), v @ jnp.linalg.solve(C, v), rtol=1e-8)
    assert jnp.allclose(cov.diagonal(), jnp.diag(C))


@pytest.mark.parametrize("name", list(_covs()))
def test_masked_quadratic_form_is_the_observed_block(name):
    cov = _covs()[name]
    C = np.asarray(cov.as_matrix())
    mask = jnp.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    v = jax.random.normal(jax.random.PRNGKey(2), (8,)).at[1].set(jnp.nan)
    obs = np.flatnonzero(np.asarray(mask))
    vo = np.asarray(v)[obs]
    expected = vo @ np.linalg.solve(C[np.ix_(obs, obs)], vo)
    assert np.isclose(float(cov.masked_inv_quad(v, mask)), expected, rtol=1e-8)


def test_ring_correlation_is_stationary_and_decays():
    C = np.asarray(vc.periodic_covariance(40, 3.0, 1.0).as_matrix())
    assert np.allclose(C[0], np.roll(C[5], -5), atol=1e-12)
    assert C[0, 1] > C[0, 3] > C[0, 10] > 0
    assert np.isclose(C[0, 1], C[0, 39])


def test_not_positive_definite_is_a_clear_error():
    bad = jnp.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="not positive definite.*smallest eigenvalue -1"):
        vc.DenseCovariance(bad)
    with pytest.raises(ValueError, match="not symmetric"):
        vc.DenseCovariance(jnp.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="variances must all be > 0"):
        vc.DiagonalCovariance(jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="variance must be > 0"):
        vc.ScaledIdentityCovariance(3, 0.0)


def test_climatological_covariance_scale_and_nugget():
    traj = vc.nature_run(vc.Lorenz96(K=8), jax.random.PRNGKey(0), 500, 200)
    sample = np.cov(np.asarray(traj), rowvar=False)
    B = np.asarray(vc.climatological_covariance(traj, 0.1, nugget=0.5).as_matrix())
    assert np.allclose(B, 0.1 * sample + 0.5 * np.eye(8))
    with pytest.raises(ValueError, match="more times than state components"):
        vc.climatological_covariance(traj[:5], 0.1)
    with pytest.raises(ValueError, match="nugget >= 0"):
        vc.climatological_covariance(traj, 0.1, nugget=-1.0)
