"""The `train` flow: simulate windows of the experiment, train its learned method, check it
on held-out windows against the classical oracle (and, for the amortized posterior, its
calibration), and write the checkpoint beside the store."""

import time

import jax
import numpy as np
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

import tasks
import vardax_core as vc
from tasks import _learned as learned

_progress: list = []


def set_progress(callback) -> None:
    """`callback(row)` gets each training log row (`step`, `loss`, `val_loss`, …), for the
    CLI's progress bar; `None` removes it."""
    _progress.clear()
    if callback is not None:
        _progress.append(callback)


def _parts(config: str):
    exp = tasks.experiment(config)
    B, R = exp.gate.prior_cov, exp.gate.obs_cov
    return exp, B, R


@task(name="simulate-training-windows", task_run_name="simulate-training-windows")
def simulate_windows(config: str) -> dict:
    """Training, validation, held-out and SBC windows, each from its own seed."""
    exp, B, _ = _parts(config)
    t = exp.cfg.method.training
    sizes = {"train": t.n_train, "validation": t.n_validation, "heldout": t.n_heldout}
    if exp.cfg.method.name == "amortized":
        sizes["sbc"] = t.n_sbc
    log = get_run_logger()
    out = {}
    for offset, (name, n) in enumerate(sizes.items()):
        out[name] = learned.training_windows(
            exp.cfg, exp.model, exp.obs_operator, B, n, t.seed + 7919 * offset
        )
        log.info("%s: simulated %d %s windows", exp.name, n, name)
    return out


@task(name="train-network", task_run_name="train-network")
def train_network(config: str, windows: dict):
    """Adam on the training windows; the loss goes to the run's log, a progress artifact in
    the UI and the CLI's bar. **Returns** `(network, history)`."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    exp, _, _ = _parts(config)
    t = exp.cfg.method.training
    log = get_run_logger()
    net = learned.new_network(exp.cfg, exp.model, exp.obs_operator)
    log.info(
        "%s: training %s (%d parameters) for %d steps on %d windows",
        exp.name,
        exp.cfg.method.name,
        learned.parameter_count(net),
        t.steps,
        t.n_train,
    )
    try:
        artifact = create_progress_artifact(
            0.0, key=f"{exp.name}-training", description=f"{exp.name}: training steps done"
        )
    except Exception:  # the UI entry is not worth failing a training for
        artifact = None
    t0 = time.perf_counter()

    def report(row):
        row["elapsed_s"] = round(time.perf_counter() - t0, 2)
        log.info(
            "step %d/%d: loss %.4g, validation loss %.4g (mse %.4g)",
            row["step"],
            t.steps,
            row["loss"],
            row.get("val_loss", np.nan),
            row.get("val_mse", np.nan),
        )
        if artifact is not None:
            try:
                update_progress_artifact(artifact, 100.0 * row["step"] / t.steps)
            except Exception:
                pass
        for callback in _progress:
            callback(row | {"total": t.steps})

    H = None if exp.cfg.method.name == "amortized" else exp.obs_operator
    net, history = vc.fit(
        net,
        windows["train"],
        steps=t.steps,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        key=jax.random.PRNGKey(t.seed),
        validation=windows["validation"],
        obs_operator=H,
        every=t.log_every,
        callback=report,
        end_weight=t.end_weight,
    )
    return net, history


@task(name="evaluate-heldout", task_run_name="evaluate-heldout")
def evaluate(config: str, net, windows: dict) -> dict:
    """On the held-out windows: RMSE at the window end of the learned analysis, the
    background and the oracle (strong 4DVar), and the fraction of windows the oracle gate
    passes; for the amortized posterior, SBC on its own windows."""
    exp, B, R = _parts(config)
    method = learned.as_method(exp.cfg, net, exp.obs_operator, B, R)
    metrics = vc.heldout_scores(method, windows["heldout"], exp.gate.oracle)
    if "sbc" in windows:
        sbc_windows = windows["sbc"]
        report = vc.simulation_based_calibration(
            net.sample, sbc_windows.target, sbc_windows, jax.random.PRNGKey(7), n_samples=99
        )
        metrics |= {
            "sbc_passed": report.passed,
            "sbc_min_p": float(np.min(report.p_values)),
            "sbc_summary": report.summary(),
        }
    log = get_run_logger()
    log.info("%s: held-out metrics %s", exp.name, metrics)
    return metrics


@task(name="write-checkpoint", task_run_name="write-checkpoint")
def write_checkpoint(config: str, net, metrics: dict) -> str:
    exp, _, _ = _parts(config)
    url = learned.save(exp.cfg, net, metrics, config)
    tasks.forget(config)  # the next use of this config loads the new network
    get_run_logger().info("%s: checkpoint written to %s", exp.name, url)
    return url


def _train_run_name() -> str:
    return f"{tasks.experiment(flow_run.parameters['config']).name}/train"


@flow(name="train", flow_run_name=_train_run_name, log_prints=False)
def train_flow(config: str) -> dict:
    """Trains the config's learned method and writes its checkpoint. **Returns** the
    metrics written with it (training history, held-out scores, SBC for the amortized
    posterior) and the checkpoint's URL."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    exp = tasks.experiment(config)
    if not exp.cfg.method.learned:
        raise ValueError(
            f"{config}: method {exp.cfg.method.name} is not learned; nothing to train "
            "(fourdvarnet or amortized are)"
        )
    t0 = time.perf_counter()
    windows = simulate_windows(config)
    net, history = train_network(config, windows)
    metrics = evaluate(config, net, windows)
    metrics["history"] = history
    metrics["train_wall_s"] = round(time.perf_counter() - t0, 1)
    url = write_checkpoint(config, net, metrics)
    try:
        create_table_artifact(history, key=f"{exp.name}-training-loss", description="loss")
        lines = [f"# {exp.name}: {exp.cfg.method.name} trained", "", f"checkpoint `{url}`", ""]
        lines += [f"- {k}: {v}" for k, v in metrics.items() if k != "history"]
        create_markdown_artifact("\n".join(lines), key=f"{exp.name}-training")
    except Exception:
        pass
    return metrics | {"checkpoint": url}
