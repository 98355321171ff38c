"""Tangent-linear and adjoint checks of the forward models, on both integration paths."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import vardax_core as vc

DIFFRAX = vc.Diffrax(stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10))

MODELS = {
    "l63": lambda integ: vc.Lorenz63(integrator=integ),
    "l96": lambda integ: vc.Lorenz96(K=12, integrator=integ),
    "l96-2l": lambda integ: vc.Lorenz96TwoLevel(K=4, J=4, integrator=integ),
}
N_STEPS = 10


def _state(model, key):
    return vc.nature_run(model, key, 0, 300)[0]


@pytest.mark.parametrize("path", ["rk4", "diffrax"])
@pytest.mark.parametrize("name", list(MODELS))
def test_tangent_linear_and_adjoint(name, path, key):
    """On the diffrax path the tangent linear is diffrax's ForwardMode and the adjoint its
    RecursiveCheckpointAdjoint: the dot-product test checks one against the other."""
    if path == "rk4":
        model = reverse = MODELS[name](vc.RK4())
    else:
        model = MODELS[name](eqx.tree_at(lambda i: i.adjoint, DIFFRAX, dfx.ForwardMode()))
        reverse = MODELS[name](DIFFRAX)
    x = _state(MODELS[name](vc.RK4()), key)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    dx = jax.random.normal(k1, x.shape)
    dy = jax.random.normal(k2, (N_STEPS + 1, x.shape[0]))

    def f(x0):
        return model.rollout(x0, N_STEPS)

    assert vc.tangent_linear_test(f, x, dx, eps=1e-6) < 1e-6
    remainders = vc.taylor_test(f, x, dx, epsilons=(1e-2, 1e-3, 1e-4))
    # second-order remainder: each tenfold smaller ε shrinks it about a hundredfold
    assert jnp.all(remainders[1:] / remainders[:-1] < 0.02)
    assert vc.adjoint_test(f, x, dx, dy, lambda x0: reverse.rollout(x0, N_STEPS)) < 1e-9


@pytest.mark.parametrize("name", list(MODELS))
def test_rk4_and_diffrax_agree(name, key):
    rk4 = MODELS[name](vc.RK4(substeps=10))
    x = _state(rk4, key)

    def loss(model, x0):
        return 0.5 * jnp.sum(model.rollout(x0, N_STEPS)[-1] ** 2)

    g_rk4 = jax.grad(loss, argnums=1)(rk4, x)
    for adjoint in (
        dfx.RecursiveCheckpointAdjoint(),
        dfx.BacksolveAdjoint(stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10)),
    ):
        model = MODELS[name](
            vc.Diffrax(adjoint=adjoint, stepsize_controller=DIFFRAX.stepsize_controller)
        )
        assert jnp.allclose(
            model.rollout(x, N_STEPS), rk4.rollout(x, N_STEPS), rtol=1e-6, atol=1e-6
        )
        g = jax.grad(loss, argnums=1)(model, x)
        assert jnp.linalg.norm(g - g_rk4) / jnp.linalg.norm(g_rk4) < 1e-5, type(adjoint).__name__


def test_lorenz96_fixed_point_and_energy():
    model = vc.Lorenz96(K=40, F=8.0)
    x_eq = jnp.full((40,), 8.0)
    assert jnp.allclose(model.vector_field(x_eq), 0.0)
    # the advection term conserves energy: Σ x_k (x_{k+1} − x_{k−2}) x_{k−1} = 0
    x = jax.random.normal(jax.random.PRNGKey(3), (40,))
    assert abs(float(jnp.vdot(x, model.vector_field(x) + x - 8.0))) < 1e-10


def test_two_level_coupling_matches_definition():
    model = vc.Lorenz96TwoLevel(K=4, J=3)
    state = jax.random.normal(jax.random.PRNGKey(4), (model.state_size,))
    x, y = state[:4], state[4:].reshape(4, 3)
    dx = model.vector_field(state)[:4]
    k = 2
    expected = (x[3] - x[0]) * x[1] - x[2] + model.F - model.h * model.c / model.b * y[2].sum()
    assert jnp.allclose(dx[k], expected)


def test_rollout_rejects_wrong_state_shape():
    with pytest.raises(ValueError, match=r"x0 has shape \(5,\).*state size 40"):
        vc.Lorenz96(K=40).rollout(jnp.zeros(5), 3)
