"""The example plugin package `examples/ks` (vardax-ks), imported as a user's installed
package: its entry points resolve, its model's and operator's derivatives pass the checks
every 4DVar system runs first, and bad arguments are refused. (The CLI end-to-end run of
its configs is in the CLI tests.)"""

from importlib.metadata import entry_points
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import vardax_core as vc

try:
    import vardax_ks
except ImportError as err:  # pragma: no cover - a set-up problem, said plainly
    raise ImportError(
        "the example plugin package vardax-ks is not installed: run "
        "`.venv/bin/python -m pip install -e examples/ks` (make test does)"
    ) from err

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ks"
N_STEPS = 5


@pytest.fixture(scope="module", params=[{}, {"n": 32}], ids=["defaults", "n32"])
def ks(request):
    """The model (defaults, and the example configs' `n=32`) and a state on its attractor."""
    model = vardax_ks.KuramotoSivashinsky(**request.param)
    x = model.rollout(model.random_state(jax.random.PRNGKey(0)), 1000)[-1]
    return model, x


def _check_derivatives(f, x, dx, dy, tl_tol, adjoint_tol):
    assert vc.tangent_linear_test(f, x, dx) < tl_tol
    remainders = vc.taylor_test(f, x, dx, epsilons=(1e-1, 1e-2, 1e-3))
    ratios = remainders[:-1] / remainders[1:]
    assert jnp.all((ratios > 50) & (ratios < 200)), ratios  # second order: ×100 per decade
    assert vc.adjoint_test(f, x, dx, dy) < adjoint_tol


# --- (b) the entry points ----------------------------------------------------------------


def test_entry_points_resolve_to_the_classes():
    (model,) = entry_points(group="vardax_cycle.models", name="kuramoto_sivashinsky")
    (operator,) = entry_points(group="vardax_cycle.operators", name="ks_cubic")
    assert model.load() is vardax_ks.KuramotoSivashinsky
    assert operator.load() is vardax_ks.CubicObs
    assert model.dist.name == operator.dist.name == "vardax-ks"


@pytest.mark.parametrize("config", ["ks-3dvar.yaml", "ks-4dvar.yaml"])
def test_example_configs_build_the_plugins(config):
    """As the pipeline calls them: `Model(**params)`, `Operator(locations=…, state_size=…,
    **params)`."""
    cfg = yaml.safe_load((EXAMPLE / "experiments" / config).read_text())
    (model_ep,) = entry_points(group="vardax_cycle.models", name=cfg["model"]["name"])
    model = model_ep.load()(**cfg["model"]["params"])
    op = cfg["observations"]["operator"]
    (op_ep,) = entry_points(group="vardax_cycle.operators", name=op["name"])
    every = cfg["observations"]["locations"]["every"]
    locations = list(range(0, model.state_size, every))
    H = op_ep.load()(locations=locations, state_size=model.state_size, **op["params"])
    assert H.obs_size == len(locations) and H.state_size == model.state_size
    assert not H.is_linear and model.periodic


# --- (a) derivatives ---------------------------------------------------------------------


def test_model_tangent_linear_and_adjoint(ks):
    model, x = ks
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    dx = model.perturbation(k1, 1.0)
    dy = jax.random.normal(k2, x.shape)

    def f(x0):
        return model.rollout(x0, N_STEPS)[-1]

    _check_derivatives(f, x, dx, dy, tl_tol=1e-6, adjoint_tol=1e-12)


def test_cubic_obs_derivatives_and_linearisation(ks):
    model, x = ks
    H = vardax_ks.CubicObs(
        locations=list(range(0, model.state_size, 4)), state_size=model.state_size, kappa=0.1
    )
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    dx = jax.random.normal(k1, x.shape)
    dy = jax.random.normal(k2, (H.obs_size,))
    _check_derivatives(H, x, dx, dy, tl_tol=1e-8, adjoint_tol=1e-13)
    # the hand-written linearisation (what 3DVar's gate and OI-style solves use) is the
    # Jacobian, and its transpose the adjoint
    u = x[::4]
    np.testing.assert_allclose(H(x), u + 0.1 * u**3, rtol=1e-14)
    _, jvp = jax.jvp(H, (x,), (dx,))
    _, vjp = jax.vjp(H, x)
    J = H.linearise(x)
    np.testing.assert_allclose(J.mv(dx), jvp, rtol=1e-13)
    np.testing.assert_allclose(J.T.mv(dy), vjp(dy)[0], rtol=1e-13)


def test_model_layout_and_smooth_draws(ks):
    model, x = ks
    n = model.state_size
    assert model.state_shape == (n,) and model.state_dims == ("x",) and model.periodic
    np.testing.assert_allclose(model.state_coords["x"], np.arange(n) * 22.0 / n)
    # on the attractor: the known amplitude, zero mean (conserved), and no grid-scale noise
    assert 0.5 < float(jnp.std(x)) < 2.5 and abs(float(jnp.mean(x))) < 1e-10
    dx = model.perturbation(jax.random.PRNGKey(3), 0.3)
    assert np.isclose(float(jnp.std(dx)), 0.3) and abs(float(jnp.mean(dx))) < 1e-12
    spectrum = jnp.abs(jnp.fft.rfft(dx))
    k = 2 * np.pi / 22.0 * np.arange(len(spectrum))
    assert float(jnp.max(spectrum[k > 2.0])) < 1e-10


# --- (c) bad arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 6}, r"n must be an even int >= 8"),
        ({"n": 33}, r"n must be an even int >= 8"),
        ({"n": 64.0}, r"n must be an even int >= 8"),
        ({"L": 0.0}, r"L \(the domain's length\) must be > 0"),
        ({"L": -22.0}, r"L \(the domain's length\) must be > 0"),
        ({"dt": 0.0}, r"dt must be > 0"),
        ({"integrator": vc.RK4(substeps=1)}, r"RK4 with 1 substeps is unstable .* at least 26"),
        ({"n": 32, "substeps": 1, "dt": 0.1}, r"at least 3 substeps"),
        ({"substeps": 0}, r"substeps must be an int >= 1"),
        ({"substeps": 30, "integrator": vc.RK4(substeps=30)}, r"not both"),
    ],
)
def test_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vardax_ks.KuramotoSivashinsky(**kwargs)


def test_model_takes_keywords_only():
    with pytest.raises(TypeError):
        vardax_ks.KuramotoSivashinsky(64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"locations": [0, 64]}, r"locations \[64\] are outside a state of size 64"),
        ({"locations": [-1]}, r"locations \[-1\] are outside"),
        ({"locations": []}, r"locations is empty"),
        ({"locations": [0, 4, 4]}, r"duplicates"),
        ({"locations": [0.5]}, r"locations must be ints"),
        ({"locations": "0,4"}, r"locations must be a list of ints"),
        ({"state_size": 0}, r"state_size must be >= 1"),
        ({"state_size": 64.0}, r"state_size must be an int"),
        ({"kappa": -0.1}, r"kappa must be finite and >= 0"),
        ({"kappa": float("nan")}, r"kappa must be finite and >= 0"),
        ({"kappa": "big"}, r"kappa must be a number"),
    ],
)
def test_cubic_obs_rejects_bad_arguments(kwargs, match):
    args = {"locations": [0, 4, 8], "state_size": 64, "kappa": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        vardax_ks.CubicObs(**args)
