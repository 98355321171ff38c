"""Learned methods' checkpoints: save, load, and the check that a checkpoint was trained for
the experiment's layout. The networks and their training are `vardax_core`'s; which network
a config names is the registry's (`configs.registry.NETWORKS`)."""

import io
import json
import math
import time

import equinox as eqx
import jax

import configs
import storage


def checkpoint_url(cfg: configs.ExperimentConfig) -> str:
    """`method.checkpoint`, else `<method>.eqx` beside the store."""
    m = cfg.method
    return m.checkpoint or storage.sibling_url(cfg.store.url, f"{m.name}.eqx")


def save(cfg: configs.ExperimentConfig, net, metrics: dict, config_path: str) -> str:
    """Writes the checkpoint with its layout hash, config and metrics; **returns** its URL."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, net)
    url = checkpoint_url(cfg)
    metadata = {
        "experiment": cfg.experiment,
        "method": cfg.method.label,
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


def load(cfg: configs.ExperimentConfig, config_path: str, like):
    """The trained network of the experiment, read into the structure of `like` (an
    untrained network of the configured architecture). Raises `storage.CheckpointError`
    when the checkpoint is missing, incomplete, or was trained for another layout (naming
    what differs)."""
    url = checkpoint_url(cfg)
    options = dict(cfg.store.storage_options)
    retrain = f"train it with `vardax-cycle train {config_path}`"
    try:
        payload, meta = storage.read_checkpoint(url, options)
    except storage.CheckpointError as err:
        raise storage.CheckpointError(
            f"experiment {cfg.experiment}: method {cfg.method.label} needs a trained network: "
            f"{err}; {retrain}"
        ) from None
    expected = configs.layout_hash(cfg)
    if meta.get("layout_hash") != expected:
        diff = _differences(configs.learned_layout(cfg), meta.get("layout", {}))
        raise storage.CheckpointError(
            f"checkpoint {url} was trained for another layout (hash {meta.get('layout_hash')}, "
            f"this config {expected}): {'; '.join(diff[:6]) or 'unknown difference'}; {retrain}"
        )
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as err:  # a truncated or foreign file
        raise storage.CheckpointError(
            f"checkpoint {url} cannot be read: {err}; {retrain}"
        ) from None


def parameter_count(net) -> int:
    return sum(
        math.prod(a.shape) for a in jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array))
    )
