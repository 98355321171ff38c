"""The one registry: every config class has its entry, capabilities are asked of the core
objects, a climatological B is computed once and cached, and importing the project sets
nothing up by itself."""

import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import yaml

import configs
import tasks
import vardax_core as vc
from configs import registry

ROOT = Path(__file__).resolve().parents[1]


def _members(union) -> set[type]:
    """The config classes of a union (a member may be `Annotated` with its tag)."""
    members = typing.get_args(typing.get_args(union)[0])
    return {
        typing.get_args(m)[0] if typing.get_origin(m) is typing.Annotated else m for m in members
    }


def test_every_config_class_has_its_registry_entry():
    assert _members(configs._models.ModelConfig) == set(registry.MODELS)
    assert _members(configs.MethodConfig) == set(registry.METHODS)
    assert _members(configs.CovarianceConfig) == set(registry.COVARIANCES)
    assert _members(configs._models.Network) == set(registry.NETWORK_POINTS)
    learned = {c for c in registry.METHODS if issubclass(c, configs.LearnedMethodConfig)}
    assert learned == set(registry.LEARNED_METHODS) == set(registry.NETWORKS)


def test_capabilities_come_from_the_core_objects():
    oi = tasks.experiment(ROOT / "configs" / "l96-oi.yaml")
    strong = tasks.experiment(ROOT / "configs" / "l96-4dvar.yaml")
    qg = tasks.experiment(ROOT / "configs" / "qg-3dvar.yaml")
    assert not oi.core.gate.increments_at_start  # OI analyses every window time
    assert strong.core.gate.increments_at_start  # 4DVar's control is the window start
    assert oi.layout.state_dims == (("site", 40),)
    assert qg.layout.state_dims == (("y", 64), ("x", 64))
    assert qg.layout.obs_points is not None and len(qg.layout.obs_points) == 300
    assert vc.Lorenz96.periodic and not vc.Lorenz96TwoLevel.periodic
    assert vc.OptimalInterpolation.four_dimensional is False
    assert vc.FourDVarNetMethod.learned and not vc.ThreeDVar.learned


def test_a_climatological_b_is_computed_once_and_cached(tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "l63-3dvar.yaml").read_text())
    data["store"]["url"] = str(tmp_path / "store.zarr")
    cfg = configs.parse_config(data, "l63")
    first = tasks.build_experiment(cfg, "l63")
    (cached,) = (tmp_path / "cache").glob("climate-covariance-*.npy")
    B = np.asarray(first.parts.prior_cov.as_matrix())
    sample = np.load(cached)
    np.testing.assert_allclose(
        B, vc.scaled_covariance(sample, 1.0).matrix * cfg.method.prior_cov.scale
    )
    np.save(cached, 2 * sample)  # a second handle reads the file, it does not recompute
    second = tasks.build_experiment(cfg, "l63")
    np.testing.assert_allclose(np.asarray(second.parts.prior_cov.as_matrix()), 2 * B, rtol=1e-12)


def test_importing_the_project_sets_nothing_up():
    code = (
        "import os, jax, tasks, flows._flows; "
        "print(jax.config.jax_enable_x64, 'PREFECT_SERVER_ANALYTICS_ENABLED' in os.environ)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PREFECT_SERVER")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
