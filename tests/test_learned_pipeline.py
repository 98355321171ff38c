"""A learned method end to end: the train flow writes a checkpoint (with its layout hash
and metrics), `run` loads it and cycles it through the gate with the strong-4DVar oracle,
and a checkpoint for another layout, or none, is refused with what to do."""

import json

import numpy as np
import pytest
import xarray as xr
from _pipeline_helpers import experiment_config
from typer.testing import CliRunner

import storage
import tasks
from flows import _flows, _train
from flows.cli import app

TINY = {
    "method__training": {
        "n_train": 96,
        "n_validation": 16,
        "n_heldout": 6,
        "n_sbc": 40,
        "steps": 40,
        "batch_size": 32,
        "log_every": 20,
    },
    "method__network": {"latent_dim": 4, "hidden_dim": 6, "n_solver_steps": 4},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("learned")
    config = experiment_config(root, "l63-fourdvarnet", **TINY)
    rows = []
    _train.set_progress(rows.append)
    try:
        metrics = _train.train_flow(str(config))
    finally:
        _train.set_progress(None)
    return root, config, metrics, rows


def test_train_flow_writes_a_checkpoint_with_its_layout_and_metrics(trained):
    root, config, metrics, rows = trained
    ckpt = root / "fourdvarnet.eqx"
    assert metrics["checkpoint"] == str(ckpt) and ckpt.exists()
    meta = json.loads((root / "fourdvarnet.eqx.json").read_text())
    assert meta["layout_hash"] == __import__("configs").layout_hash(tasks.experiment(config).cfg)
    assert [r["step"] for r in meta["metrics"]["history"]] == [20, 40]
    assert [r["step"] for r in rows] == [20, 40]  # the CLI's progress saw the loss
    m = meta["metrics"]
    history = m["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # 40 tiny steps still learn
    assert np.isfinite(m["rmse_end"]) and np.isfinite(m["rmse_end_background"])
    assert 0.0 <= m["oracle_pass_fraction"] <= 1.0 and np.isfinite(m["rmse_end_oracle"])
    assert not list(root.glob("*.partial"))


def test_a_learned_method_cycles_through_the_oracle_gate(trained):
    """Block mode through Prefect equals the pure-JAX loop with the loaded network and the
    oracle gate; the store records the oracle's verdict and the cycles' statuses."""
    root, config, _, _ = trained
    n = 6
    _flows.simulate_flow(str(config), n, 0)
    exp = tasks.experiment(config)
    last = storage.cycle_id(exp.axis.point(n - 1))
    out = _flows.cycling_flow(str(config), end=last, block=3)
    assert out["cycles"] == n
    ds = xr.open_zarr(str(root / "store.zarr")).isel(cycle=slice(0, n))
    ref = tasks.reference_scores(str(config), n)["output"]
    np.testing.assert_allclose(ds.analysis.values, np.asarray(ref.accepted), atol=1e-10)
    sigma = ds.oracle_max_sigma.values
    assert np.all(np.isfinite(sigma))
    np.testing.assert_allclose(sigma, np.asarray(ref.gate.oracle_max_sigma), rtol=1e-8)
    passed = np.asarray(ref.gate.passed)
    status = ds.status.values
    assert np.all((status == 1) == passed)  # committed exactly where the gate passed
    for s, reason in zip(status, ds.status_reason.values, strict=True):
        if s != 1:
            assert "oracle" in str(reason) or "chi2" in str(reason) or "increment" in str(reason)


def test_run_refuses_a_checkpoint_for_another_layout(trained, tmp_path):
    root, _, _, _ = trained
    other = experiment_config(
        tmp_path,
        "l63-fourdvarnet",
        cycling__window_steps=10,
        method__checkpoint=str(root / "fourdvarnet.eqx"),
        **TINY,
    )
    with pytest.raises(storage.CheckpointError, match=r"cycling\.window_steps.*vardax-cycle train"):
        tasks.experiment(other).require_method()
    result = CliRunner().invoke(app, ["run", str(other), "--cycles", "2"])
    assert result.exit_code == 2
    assert "another layout" in result.output


def test_run_without_a_checkpoint_says_how_to_train(tmp_path, prefect_api):
    config = experiment_config(tmp_path, "l63-fourdvarnet", **TINY)
    result = CliRunner().invoke(app, ["run", str(config), "--cycles", "2"])
    assert result.exit_code == 2, result.output
    assert "vardax-cycle train" in " ".join(result.output.split())
    assert not (tmp_path / "store.zarr").exists()  # nothing was started


def test_amortized_training_reports_calibration(tmp_path, prefect_api):
    config = experiment_config(
        tmp_path,
        "l63-fourdvarnet",
        method__name="amortized",
        method__network={"context_dim": 16, "hidden_dim": 32},
        method__training=TINY["method__training"] | {"steps": 60},
    )
    metrics = _train.train_flow(str(config))
    assert isinstance(metrics["sbc_passed"], bool)
    assert "SBC" in metrics["sbc_summary"] and 0 <= metrics["sbc_min_p"] <= 1
    assert metrics["history"][-1]["val_loss"] < metrics["history"][0]["val_loss"]
    # the trained posterior is usable by the cycle at once (the cache was refreshed)
    tasks.experiment(config).require_method()


def test_a_nonfinite_learned_analysis_is_gated_and_recorded(trained, tmp_path):
    """A network whose weights went NaN: each cycle's result is `nonfinite_analysis`, the
    oracle gate rejects it and hands on the strong-4DVar oracle's analysis, and the store
    says so."""
    import equinox as eqx
    import jax

    import vardax_core as vc
    from tasks import _learned

    _, config, _, _ = trained
    net = tasks.experiment(config).core.method.net
    params, static = eqx.partition(net, eqx.is_inexact_array)
    broken = eqx.combine(jax.tree_util.tree_map(lambda a: a * np.nan, params), static)
    other = experiment_config(
        tmp_path, "l63-fourdvarnet", method__checkpoint=str(tmp_path / "nan.eqx"), **TINY
    )
    _learned.save(tasks.experiment(other).cfg, broken, {}, str(other))
    tasks.forget(other)
    _flows.simulate_flow(str(other), 3, 0)
    exp = tasks.experiment(other)
    _flows.cycling_flow(str(other), end=exp.axis.cycle(2).id)
    ds = xr.open_zarr(exp.store_url).isel(cycle=slice(0, 3))
    assert [storage.STATUS[s] for s in ds.status.values] == ["degraded"] * 3
    assert {vc.result_name(c) for c in ds.result_code.values} == {"nonfinite_analysis"}
    for reason in ds.status_reason.values:
        assert "the analysis is not finite" in str(reason)
        assert "handed on the strong-4DVar oracle's analysis" in str(reason)
    assert np.isfinite(ds.analysis.values).all()  # the oracle's, not the network's
