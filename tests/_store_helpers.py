"""Shared by the storage tests: a small Lorenz-96-shaped layout and deterministic cycle data."""

import hashlib
from pathlib import Path

import numpy as np

import storage as st

LAYOUT = st.StoreLayout(
    state_dims=(("site", 8),),
    window_offsets_s=(0, 10800, 21600),
    lead_offsets_s=(0, 21600),
    obs_size=4,
)
ORIGIN, INTERVAL = "2026-01-01T00:00Z", "PT6H"


def cycle_data(k: int) -> dict:
    """Deterministic contents for the k-th cycle."""
    rng = np.random.default_rng(k)
    W, n, m = 3, 8, 4
    mask = rng.random((W, m)) > 0.3
    return {
        "background": rng.normal(size=(W, n)),
        "analysis": rng.normal(size=(W, n)),
        "forecast": rng.normal(size=(2, n)),
        "obs_value": np.where(mask, rng.normal(size=(W, m)), np.nan),
        "obs_error_std": np.ones((W, m)),
        "obs_mask": mask,
        "obs_qc": np.where(mask, 0, 1).astype("int8"),
        "obs_source": f"file{k}.csv",
        "obs_hash": hashlib.sha256(str(k).encode()).hexdigest(),
        "cost_before": 10.0 + k,
        "cost_after": 1.0 + k,
        "iterations": 5 + k,
        "result_code": 0,
        "gate_verdict": 1,
    }


def chunk_bytes(root: Path) -> dict[str, bytes]:
    """Every chunk file of a local store (not metadata, not the lock)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "/c/" in f"/{p.relative_to(root)}" and "vardax_lock" not in str(p)
    }
