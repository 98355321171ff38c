"""Unattended cycling: the scheduled flow a deployment runs, with a catch-up policy, and
the deployment that schedules it.

A scheduled run at time T processes every cycle that is due — its window ended by T — and
is not done. After an outage the missed cycles are run, or marked `skipped`, as
`operations.catch_up` says; nothing runs twice, because the store says what is done and the
deployment allows one run at a time.
"""

import math
import time
from datetime import UTC, timedelta
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run

import storage
import tasks

from ._flows import cycles_to_do, run_cycles


def _scheduled_time() -> pd.Timestamp:
    """The run's `at` parameter, else its scheduled start (now, outside a deployment)."""
    at = (flow_run.parameters or {}).get("at")
    if at:
        return storage.parse_time(at)
    when = flow_run.scheduled_start_time
    ts = pd.Timestamp(str(when)) if when is not None else pd.Timestamp.now(tz="UTC")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _due_time() -> pd.Timestamp:
    """What is due is judged as of `at`, else as of now (never earlier than the scheduled
    time): a late run after an outage sees the whole backlog and applies the catch-up
    policy to it once; the late runs queued behind it then find nothing left to do."""
    if (flow_run.parameters or {}).get("at"):
        return _scheduled_time()
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    return max(now, _scheduled_time())


def latest_due(exp, now: pd.Timestamp) -> int:
    """Index of the newest cycle whose window has ended by `now` (-1: none yet)."""
    elapsed = (now - exp.axis.origin) / exp.axis.interval
    return math.floor(elapsed + 1e-9) - 1


def catch_up(exp, todo: list[int], now: pd.Timestamp) -> tuple[list[int], list[int], str]:
    """Splits the cycles to do into (run, skip, reason) by `operations.catch_up`."""
    ops = exp.cfg.operations
    if ops.catch_up == "all" or len(todo) <= 1:
        return todo, [], ""
    if ops.catch_up == "latest":
        return todo[-1:], todo[:-1], "catch-up policy latest: skipped for the newest cycle"
    lag = pd.Timedelta(ops.max_lag)
    recent = [now - (exp.axis.point(i) + exp.axis.interval) <= lag for i in todo]
    run = [i for i, ok in zip(todo, recent, strict=True) if ok]
    skip = [i for i, ok in zip(todo, recent, strict=True) if not ok]
    return run, skip, f"catch-up policy max_lag {ops.max_lag}: its window ended too long ago"


def _run_name() -> str:
    exp = tasks.experiment(flow_run.parameters["config"])
    return f"{exp.name}/scheduled {storage.cycle_id(_scheduled_time())}"


def _skip(run: tasks.Run, skip: list[int], reason: str) -> None:
    for i in skip:
        run.store.write_cycle(run.exp.axis.point(i), {"status_reason": reason}, "skipped")
    if skip:
        first, last = run.exp.axis.cycle(skip[0]), run.exp.axis.cycle(skip[-1])
        get_run_logger().warning(
            "%s: %d missed cycles skipped (%s … %s): %s",
            run.exp.name,
            len(skip),
            first,
            last,
            reason,
        )


@flow(name="scheduled-cycling", flow_run_name=_run_name, persist_result=False)
def scheduled_flow(config: str, at: str | None = None) -> dict:
    """Every due cycle that is not done, after the catch-up policy, each as a `cycle` run.
    `at`: the time to run as of (default: the run's scheduled time)."""
    exp, log, now = tasks.experiment(config), get_run_logger(), _due_time()
    latest = latest_due(exp, now)
    if latest < 0:
        log.info("%s: no cycle is due at %s", exp.name, storage.iso(now))
        return {"ran": [], "statuses": {}, "skipped": []}
    t0 = time.perf_counter()
    with tasks.open_run(exp) as run:
        todo = cycles_to_do(run, exp.axis.cycle(0), exp.axis.cycle(latest), rerun=False)
        to_run, skip, reason = catch_up(exp, todo, now)
        _skip(run, skip, reason)
        with tags(*exp.tags):
            statuses = run_cycles(run, to_run)
    log.info(
        "%s: ran %d cycles, skipped %d, in %.1f s",
        exp.name,
        len(to_run),
        len(skip),
        time.perf_counter() - t0,
    )
    return {
        "ran": list(statuses),
        "statuses": statuses,
        "skipped": [exp.axis.cycle(i).id for i in skip],
    }


def schedule(exp):
    """The experiment's schedule: every `cycling.interval` from the end of the first
    window, or `operations.cron` (UTC)."""
    from prefect.schedules import Cron, Interval

    if exp.cfg.operations.cron:
        return Cron(exp.cfg.operations.cron, timezone="UTC")
    first = exp.axis.origin + exp.axis.interval  # the first window ends here
    return Interval(
        timedelta(seconds=exp.axis.interval.total_seconds()),
        anchor_date=first.to_pydatetime().replace(tzinfo=UTC),
        timezone="UTC",
    )


def serve(config) -> None:
    """Serves the experiment's deployment of `scheduled_flow` in this process: its schedule,
    one run at a time (later runs queue). Needs a running server."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    exp = tasks.experiment(config)
    scheduled_flow.serve(
        name=exp.name,
        schedules=[schedule(exp)],
        parameters={"config": str(Path(config).resolve())},
        tags=exp.tags,
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="ENQUEUE"),
        description=f"{exp.cfg.description} — scheduled cycling into {exp.store_url}",
    )
