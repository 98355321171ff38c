"""The `train` flow: simulate windows of the experiment, train its learned method, check it
on held-out windows against the classical oracle (and, for the amortized posterior, its
calibration), and write the checkpoint beside the store."""

import time

from prefect import flow
from prefect.runtime import flow_run

import configs
import tasks

_progress: list = []


def set_progress(callback) -> None:
    """`callback(row)` gets each training log row (`step`, `loss`, `val_loss`, …), for the
    CLI's progress bar; `None` removes it."""
    _progress.clear()
    if callback is not None:
        _progress.append(callback)


def _train_run_name() -> str:
    return f"{tasks.experiment(flow_run.parameters['config']).name}/train"


def _artifacts(exp, metrics: dict, history: list, url: str) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    lines = [f"# {exp.name}: {exp.cfg.method.label} trained", "", f"checkpoint `{url}`", ""]
    lines += [f"- {k}: {v}" for k, v in metrics.items() if k != "history"]
    try:
        create_table_artifact(history, key=f"{exp.name}-training-loss", description="loss")
        create_markdown_artifact("\n".join(lines), key=f"{exp.name}-training")
    except Exception:  # the UI entry is not worth failing a training for
        pass


@flow(name="train", flow_run_name=_train_run_name, log_prints=False, validate_parameters=False)
def train_flow(config: str) -> dict:
    """Trains the config's learned method and writes its checkpoint. **Returns** the
    metrics written with it (training history, held-out scores, SBC for the amortized
    posterior) and the checkpoint's URL."""
    exp = tasks.experiment(config)
    if not isinstance(exp.cfg.method, configs.LearnedMethodConfig):
        raise configs.ConfigError(
            f"{config}: method {exp.cfg.method.label} is not learned; nothing to train "
            "(fourdvarnet or amortized are)"
        )
    t0 = time.perf_counter()
    windows = tasks.simulate_windows(exp)
    report = tasks.training_reporter(exp, list(_progress))
    net, history = tasks.train_network(exp, windows, report)
    metrics = tasks.evaluate(exp, net, windows)
    metrics["history"] = history
    metrics["train_wall_s"] = round(time.perf_counter() - t0, 1)
    url = tasks.write_checkpoint(exp, net, metrics)
    _artifacts(exp, metrics, history, url)
    return metrics | {"checkpoint": url}
