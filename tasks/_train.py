"""The steps of training a learned method, as Prefect tasks: simulate windows of the
experiment, train the network, score it on held-out windows, write the checkpoint."""

import time
from collections.abc import Callable

import jax
import numpy as np
from prefect import task

import vardax_core as vc
from configs import registry

from . import _learned as learned
from ._experiment import forget
from ._log import run_logger


@task(name="simulate-training-windows", task_run_name="simulate-training-windows")
def simulate_windows(exp) -> dict:
    """Training, validation, held-out and (amortized) SBC windows, each from its own seed."""
    t = exp.cfg.method.training
    sizes = {"train": t.n_train, "validation": t.n_validation, "heldout": t.n_heldout}
    if registry.LEARNED_METHODS[type(exp.cfg.method)].samples_posterior:
        sizes["sbc"] = t.n_sbc  # a posterior to calibrate
    out = {}
    for offset, (name, n) in enumerate(sizes.items()):
        out[name] = registry.training_windows(exp.build, exp.parts, n, t.seed + 7919 * offset)
        run_logger().info("%s: simulated %d %s windows", exp.name, n, name)
    return out


@task(name="train-network", task_run_name="train-network")
def train_network(exp, windows: dict, report: Callable[[dict], None]):
    """Adam on the training windows; `report(row)` gets each logged row (step, loss,
    validation loss). **Returns** `(network, history)`."""
    t = exp.cfg.method.training
    net = registry.new_network(exp.build, exp.observing.operator)
    run_logger().info(
        "%s: training %s (%d parameters) for %d steps on %d windows",
        exp.name,
        exp.cfg.method.label,
        learned.parameter_count(net),
        t.steps,
        t.n_train,
    )
    return vc.fit(
        net,
        windows["train"],
        steps=t.steps,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        key=jax.random.PRNGKey(t.seed),
        validation=windows["validation"],
        obs_operator=exp.observing.operator,
        every=t.log_every,
        callback=report,
        end_weight=t.end_weight,
    )


@task(name="evaluate-heldout", task_run_name="evaluate-heldout")
def evaluate(exp, net, windows: dict) -> dict:
    """On the held-out windows: window-end RMSE of the learned analysis, the background
    and the oracle (strong 4DVar), and the fraction of windows the oracle gate passes; for
    the amortized posterior, simulation-based calibration on its own windows."""
    method = registry.learned_method(exp.build, exp.parts, net)
    oracle = registry.build_oracle(exp.build, exp.parts, learned=True)
    metrics = vc.heldout_scores(method, windows["heldout"], oracle)
    if "sbc" in windows:
        sbc = windows["sbc"]
        key = jax.random.PRNGKey(7)
        calibration = vc.simulation_based_calibration(
            net.sample, sbc.target, sbc, key, n_samples=99
        )
        metrics |= {
            "sbc_passed": calibration.passed,
            "sbc_min_p": float(np.min(calibration.p_values)),
            "sbc_summary": calibration.summary(),
        }
    run_logger().info("%s: held-out metrics %s", exp.name, metrics)
    return metrics


@task(name="write-checkpoint", task_run_name="write-checkpoint")
def write_checkpoint(exp, net, metrics: dict) -> str:
    url = learned.save(exp.cfg, net, metrics, exp.config_path)
    forget(exp.config_path)  # the next use of this config loads the new network
    run_logger().info("%s: checkpoint written to %s", exp.name, url)
    return url


def training_reporter(exp, callbacks: list) -> Callable[[dict], None]:
    """`report(row)` for `train_network`: the run's log, a progress artifact in the UI and
    the `callbacks` (the CLI's progress bar)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    t, t0, log = exp.cfg.method.training, time.perf_counter(), run_logger()
    try:
        artifact = create_progress_artifact(
            0.0, key=f"{exp.name}-training", description=f"{exp.name}: training steps done"
        )
    except Exception:  # the UI entry is not worth failing a training for
        artifact = None

    def report(row: dict) -> None:
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
        for callback in callbacks:
            callback(row | {"total": t.steps})

    return report
