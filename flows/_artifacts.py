"""What the Prefect UI shows of a run besides its logs: per cycle a table of diagnostics
and a markdown verdict, per run a progress bar and a summary. An artifact that cannot be
created never fails the cycle or the run it describes."""

import base64
import re
import time

import numpy as np
from prefect import get_run_logger

import storage

_DIAGNOSTICS = (
    "n_obs",
    "innovation_mean",
    "innovation_chi2_dof",
    "increment_max_sigma",
    "oracle_max_sigma",
    "cost_before",
    "cost_after",
    "iterations",
    "wall_time_forecast_s",
    "wall_time_analysis_s",
    "wall_time_cycle_s",
)
PROGRESS_EVERY_S = 2.0
"""The shortest interval between two updates of a run's progress artifact."""
_MARK = {"committed": "✅", "degraded": "⚠️", "failed": "❌"}


def artifact_key(exp, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for the experiment."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{exp.name}-{what}".lower()).strip("-")


def _row(cycle, data: dict, status: str) -> dict:
    row = {"cycle": str(cycle), "status": status}
    names = _DIAGNOSTICS + (("ensemble_spread",) if "ensemble_spread" in data else ())
    for name in names:
        value = np.asarray(data.get(name, np.nan)).item()
        row[name] = round(value, 6) if isinstance(value, float) else value
    return row | {"gate": storage.GATE_VERDICT[int(data["gate_verdict"])]}


def cycle_artifacts(exp, cycle, data: dict, status: str, reason: str) -> None:
    """The cycle's diagnostics (its store variables `data`, its status, the gate's verdict
    and the reason) as a table artifact on its flow run, and for a cycle that is not
    committed its verdict as a markdown artifact too. Keyed by experiment, so the UI keeps
    their history: the table's is every cycle's, the verdicts' the cycles to look at. (Each
    artifact is a write on the API's database; a committed cycle has no more to say.)"""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    row = _row(cycle, data, status) | {"reason": reason}
    try:
        create_table_artifact(
            [row],
            key=artifact_key(exp, "cycle-diagnostics"),
            description=f"{exp.name} {cycle}: diagnostics of the cycle",
        )
        if status != "committed":
            create_markdown_artifact(
                _verdict(exp, cycle, row, data, status, reason),
                key=artifact_key(exp, "cycle-summary"),
                description=f"{exp.name} {cycle}: verdict",
            )
    except Exception as err:
        get_run_logger().warning("%s: artifacts not created: %s", cycle, err)


def _verdict(exp, cycle, row: dict, data: dict, status: str, reason: str) -> str:
    return (
        f"## {exp.name} {cycle}: {_MARK.get(status, '')} {status}\n\n"
        + (f"**Reason:** {reason}\n\n" if reason else "")
        + f"Method `{exp.cfg.method.label}`, {row['n_obs']} observations assimilated, "
        f"innovation χ²/dof {row['innovation_chi2_dof']}, "
        + (f"ensemble spread {row['ensemble_spread']}, " if "ensemble_spread" in data else "")
        + f"cost {row['cost_before']} → "
        f"{row['cost_after']} in {row['iterations']} iterations; store `{exp.store_url}`."
    )


def progress_artifact(exp, total: int):
    """A progress artifact of the run; **returns** `update(done)`."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    try:
        artifact_id = create_progress_artifact(
            0.0,
            key=artifact_key(exp, "progress"),
            description=f"{exp.name}: cycles of this run done ({total} to do)",
        )
    except Exception:
        return lambda done: None

    last = [time.monotonic()]

    def update(done: int) -> None:
        # at most one update every PROGRESS_EVERY_S seconds, and the last: a write each
        if done < total and time.monotonic() - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = time.monotonic()
        try:
            update_progress_artifact(artifact_id, 100.0 * done / max(total, 1))
        except Exception:
            pass

    return update


def run_summary(exp, first, last, counts: dict, wall: float, figure_png: bytes | None) -> None:
    """The run's summary: counts of statuses, wall time, and a figure (PNG) of its cycles."""
    from prefect.artifacts import create_markdown_artifact

    text = (
        f"## {exp.name}: cycles {first} … {last}\n\n"
        + ", ".join(f"**{k}** {v}" for k, v in sorted(counts.items()))
        + f" in {wall:.1f} s; store `{exp.store_url}`.\n\n"
    )
    if figure_png:
        text += f"![cycles](data:image/png;base64,{base64.b64encode(figure_png).decode()})\n"
    try:
        create_markdown_artifact(
            text, key=artifact_key(exp, "run-summary"), description=f"{exp.name}: this run"
        )
    except Exception as err:
        get_run_logger().warning("%s: run artifact not created: %s", exp.name, err)
