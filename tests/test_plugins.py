"""A model, operator and method of one's own, by import path: a Lorenz-96 written as a plain
vector field outside the project gives the built-in's analyses through the pipeline; every
way a plugin can be wrong is exit code 2 with a message naming the key and the target."""

import textwrap

import numpy as np
import pytest
import yaml
from _pipeline_helpers import ROOT, experiment_config, store_arrays
from typer.testing import CliRunner

import storage
import tasks
from flows import _flows
from flows.cli import app

PLUGIN = '''
import jax.numpy as jnp
import vardax_core as vc


def lorenz96(F=8.0):
    """Lorenz-96 as a user writes it: a plain vector field."""
    def f(x):
        return (jnp.roll(x, -1) - jnp.roll(x, 2)) * jnp.roll(x, 1) - x + F
    return f


def wrong_shape():
    return lambda x: x[:3]


def a_number():
    return 42


def every_other(state_size):
    return lambda x: x[::2]


def oi_of_mine(obs_operator, prior_cov, obs_cov, damping=1.0):
    return vc.OptimalInterpolation(obs_operator, prior_cov, obs_cov)


def small_model():
    return vc.Lorenz96(K=8)


def three_obs(prior_cov):
    return vc.ThreeDVar(vc.SubsetObs(range(3), 40), prior_cov, vc.ScaledIdentityCovariance(3, 1.0))
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models"


def _config(tmp_path, name: str, **changes):
    return experiment_config(tmp_path, "l96-4dvar", f"{name}.yaml", **changes)


PLUGIN_L96 = {
    "target": "my_models:lorenz96",
    "params": {"F": 8.0},
    "dt": 0.05,
    "state_size": 40,
    "dims": "site",
    "periodic": True,
}


def test_a_plain_vector_field_gives_the_built_in_analyses(prefect_api, tmp_path, plugin_module):
    n = 8
    osse = _config(tmp_path, "osse", store__url=str(tmp_path / "osse" / "store.zarr"))
    _flows.simulate_flow(str(osse), n, 0)
    obs_url = tasks.experiment(osse).obs_url
    source = {"source": "file", "url": obs_url}
    built_in = _config(
        tmp_path,
        "built-in",
        store__url=str(tmp_path / "a.zarr"),
        observations__source="file",
        observations__url=obs_url,
    )
    mine = _config(
        tmp_path,
        "mine",
        model=PLUGIN_L96,
        store__url=str(tmp_path / "b.zarr"),
        **{f"observations__{k}": v for k, v in source.items()},
    )
    exp = tasks.experiment(mine)
    assert type(exp.model).__name__ == "VectorFieldModel" and exp.model.periodic
    last = storage.cycle_id(exp.axis.point(n - 1))
    for config in (built_in, mine):
        out = _flows.cycling_flow(str(config), end=last, block=n)
        assert out["statuses"] == {"committed": n}
    a, b = store_arrays(tmp_path / "a.zarr", n), store_arrays(tmp_path / "b.zarr", n)
    np.testing.assert_allclose(b["analysis"], a["analysis"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(b["forecast"], a["forecast"], rtol=0, atol=1e-10)
    assert a["background"].shape == (n, 5, 40)  # dims: site, as the built-in's


def test_an_operator_and_a_method_of_ones_own(tmp_path, plugin_module):
    path = _config(
        tmp_path,
        "own",
        observations__operator={"target": "my_models:every_other", "linear": True},
        method={
            "target": "my_models:oi_of_mine",
            "params": {"damping": 0.5},
            "prior_cov": {"kind": "scaled_identity", "variance": 1.0},
        },
    )
    exp = tasks.experiment(path)
    assert exp.observing.operator.obs_size == 20
    assert exp.observing.locations == tuple(range(20))  # its outputs, numbered
    assert type(exp.core.method).__name__ == "OptimalInterpolation"
    assert exp.tags[1] == "oi_of_mine"


def _bad(tmp_path, **changes):
    return _config(tmp_path, "bad", **changes)


BAD = [
    (
        {"model": {"target": "no_such_module:make"}},
        ["model.target", "cannot import module 'no_such_module'"],
    ),
    (
        {"model": {"target": "broken_models:make"}},
        ["model.target", "broken_models", "boom at import"],
    ),
    (
        {"model": {"target": "my_models:nothing_here"}},
        ["model.target", "has no attribute 'nothing_here'", "my_models:nothing_here"],
    ),
    (
        {"model": {"target": "my_models:a_number"}},
        ["model", "my_models:a_number", "returned a int"],
    ),
    (
        {"model": {"target": "my_models:lorenz96", "params": {"G": 1.0}}},
        ["model.params", "my_models:lorenz96", "rejects params"],
    ),
    (
        {"model": {"target": "my_models:lorenz96"}},
        ["model.dt and model.state_size", "my_models:lorenz96", "plain vector field"],
    ),
    (
        {"model": {"target": "my_models:wrong_shape", "dt": 0.05, "state_size": 40}},
        ["model", "my_models:wrong_shape", "returns (3,)", "expected (40,)"],
    ),
    (
        {"model": {"target": "my_models:small_model"}, "observations__locations": [0, 20]},
        ["observations.locations [20]", "outside the small_model state of size 8"],
    ),
    (
        {
            "model": dict(PLUGIN_L96, state_size=32),
            "method__prior_cov": {"kind": "diagonal", "variances": [1.0] * 40},
        },
        ["method.prior_cov", "variances has 40 entries, the state has 32"],
    ),
    (
        {"observations__operator": {"target": "my_models:a_number"}},
        ["observations.operator", "my_models:a_number", "returned a int"],
    ),
    (
        {"model": {"name": "no_such_plugin"}},
        ["model.name", "no_such_plugin", "vardax_cycle.models"],
    ),
    (
        {"observations__operator": {"name": "identity"}},
        ["observations.operator", "named as a string: operator: identity"],
    ),
    (
        {"model": dict(PLUGIN_L96, dims="value")},
        ["model.dims", "'value' is reserved by the store"],
    ),
    (
        {
            "method": {
                "target": "my_models:three_obs",
                "prior_cov": {"kind": "scaled_identity", "variance": 1.0},
            }
        },
        ["method", "my_models:three_obs observes 3 observations", "has 40"],
    ),
    (
        {
            "model": {"name": "lorenz63"},
            "observations__source": "file",
            "observations__url": "obs.csv",
            "observations__capacity": 4,
        },
        ["observations.capacity", "the lorenz63 state is not one", "give locations"],
    ),
    (
        {"model": {"target": "not a path"}},
        ["model", 'target must be "package.module:attribute"'],
    ),
]


@pytest.mark.parametrize("changes, expected", BAD, ids=lambda v: str(v)[:40])
def test_a_bad_plugin_is_exit_2_naming_the_key_and_the_target(
    tmp_path, plugin_module, changes, expected
):
    result = CliRunner().invoke(app, ["validate", str(_bad(tmp_path, **changes))])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for part in expected:
        assert part in text, (part, text)
    assert "Traceback" not in result.output


def test_the_shipped_configs_parse_with_the_plugin_unions():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert tasks.experiment(path).cfg.model.label == data["model"]["name"]
