"""Learned methods in the pipeline: building the network an experiment's config
describes, its training data, and its checkpoint (save, load, and the layout check).

No numerics here: the networks, their training and the simulator are `vardax_core`'s."""

import io
import json
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import configs
import storage
import vardax_core as vc

BACKGROUND_SCALES = (0.1, 1.0)
"""Range of the factor on `B^{1/2}` noise of the training windows' initial states."""

CLIMATE_SEED = 1
"""Seed of the free run whose mean and spread normalise the networks' states."""


class MissingCheckpoint:
    """Stands in for a learned method whose checkpoint is missing or refused; any use
    raises `storage.CheckpointError` with the reason and the fix."""

    def __init__(self, message: str):
        self.message = message

    def __getattr__(self, name):
        raise storage.CheckpointError(self.message)


def checkpoint_url(cfg: configs.ExperimentConfig) -> str:
    """`method.checkpoint`, else `<method>.eqx` beside the store."""
    m = cfg.method
    return m.checkpoint or storage.sibling_url(cfg.store.url, f"{m.name}.eqx")


def _normalisation(cfg, model):
    climate = vc.nature_run(model, jax.random.PRNGKey(CLIMATE_SEED), 2000, 1000)
    if hasattr(model, "grid_shape"):  # a homogeneous field: one mean and spread
        return jnp.mean(climate), jnp.std(climate)
    return jnp.mean(climate, axis=0), jnp.std(climate, axis=0)


def new_network(cfg: configs.ExperimentConfig, model, obs_operator):
    """An untrained network of the configured architecture, normalised by the model's
    climatology (observations by their error and the states' spread)."""
    net = cfg.method.network
    T = cfg.cycling.window_steps + 1
    mean, scale = _normalisation(cfg, model)
    key = jax.random.PRNGKey(net.seed)
    obs_scale = jnp.sqrt(cfg.observations.error_std**2 + jnp.mean(scale**2))
    if cfg.method.name == "amortized":
        return vc.amortized_posterior(
            (T, obs_operator.obs_size),
            (T, model.state_size),
            key=key,
            context_dim=net.context_dim,
            hidden_dim=net.hidden_dim,
            depth=net.depth,
            mean=mean,
            scale=scale,
            obs_scale=obs_scale,
            use_background=True,
        )
    kw = dict(
        key=key,
        latent_dim=net.latent_dim,
        hidden_dim=net.hidden_dim,
        n_solver_steps=net.n_solver_steps,
        prior=net.prior,
        gradient_mode=net.gradient_mode,
        mean=mean,
        scale=scale,
        obs_scale=obs_scale,
    )
    if hasattr(model, "grid_shape"):
        return vc.FourDVarNet2D(model.grid_shape, T, **kw)
    return vc.FourDVarNet1D(model.state_size, T, **kw)


def training_windows(cfg, model, obs_operator, prior_cov, n: int, seed: int) -> vc.Batch1D:
    """`n` windows of the experiment's situation: a truth, its observations on the
    configured layout (the first row left to the previous window, as the cycle does) and a
    background forecast from the truth plus `N(0, s²B)`, `s` log-uniform in
    `BACKGROUND_SCALES` (the range of background errors a cycle meets)."""
    return vc.simulate_windows(
        model,
        obs_operator,
        cfg.observations.error_std,
        jax.random.PRNGKey(seed),
        n,
        cfg.cycling.window_steps,
        obs_every=cfg.observations.every_steps,
        spinup_steps=cfg.cycling.spinup_steps,
        background_cov=prior_cov,
        background_scales=BACKGROUND_SCALES,
        first_row_observed=False,
    )


def as_method(cfg, net, obs_operator, prior_cov, obs_cov) -> vc.AbstractAnalysisMethod:
    cls = vc.AmortizedMethod if cfg.method.name == "amortized" else vc.FourDVarNetMethod
    return cls(net, obs_operator, prior_cov, obs_cov)


def save(cfg: configs.ExperimentConfig, net, metrics: dict, config_path: str) -> str:
    """Writes the checkpoint with its layout hash, config and metrics; **returns** its URL."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, net)
    url = checkpoint_url(cfg)
    metadata = {
        "experiment": cfg.experiment,
        "method": cfg.method.name,
        "layout_hash": configs.layout_hash(cfg),
        "layout": configs.learned_layout(cfg),
        "config": config_path,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": metrics,
    }
    storage.write_checkpoint(url, buffer.getvalue(), metadata, dict(cfg.store.storage_options))
    return url


def _differences(ours: dict, theirs: dict, prefix="") -> list[str]:
    out = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {json.dumps(b)}, config {json.dumps(a)}")
    return out


def load(cfg: configs.ExperimentConfig, config_path: str, model, obs_operator):
    """The trained network of the experiment. Raises `storage.CheckpointError` when the
    checkpoint is missing, incomplete, or was trained for another layout (naming what
    differs)."""
    url = checkpoint_url(cfg)
    options = dict(cfg.store.storage_options)
    retrain = f"train it with `vardax-cycle train {config_path}`"
    try:
        payload, meta = storage.read_checkpoint(url, options)
    except storage.CheckpointError as err:
        raise storage.CheckpointError(
            f"experiment {cfg.experiment}: method {cfg.method.name} needs a trained network: "
            f"{err}; {retrain}"
        ) from None
    expected = configs.layout_hash(cfg)
    if meta.get("layout_hash") != expected:
        diff = _differences(configs.learned_layout(cfg), meta.get("layout", {}))
        raise storage.CheckpointError(
            f"checkpoint {url} was trained for another layout (hash {meta.get('layout_hash')}, "
            f"this config {expected}): {'; '.join(diff[:6]) or 'unknown difference'}; {retrain}"
        )
    like = new_network(cfg, model, obs_operator)
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like), meta
    except Exception as err:  # a truncated or foreign file
        raise storage.CheckpointError(
            f"checkpoint {url} cannot be read: {err}; {retrain}"
        ) from None


def oracle(cfg, model, obs_operator, prior_cov, obs_cov) -> vc.PosteriorAgreement | None:
    """The gate's oracle for a learned method (strong 4DVar, Levenberg–Marquardt)."""
    o = cfg.gates.oracle
    if o is None:
        return None
    strong = vc.StrongFourDVar(model, obs_operator, prior_cov, obs_cov, max_steps=o.max_steps)
    return vc.PosteriorAgreement(strong, k=o.k, min_fraction=o.min_fraction, at=o.at)


def oracle_fallback(cfg) -> bool:
    """Whether a rejected learned analysis is replaced by the oracle's."""
    o = cfg.gates.oracle
    return o is not None and o.on_failure == "oracle"


def parameter_count(net) -> int:
    return sum(
        math.prod(a.shape) for a in jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array))
    )
