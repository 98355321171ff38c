"""Unattended cycling: the scheduled flow a deployment runs, with a catch-up policy.

A scheduled run at time T processes every cycle that is due — its window ended by T — and
is not done. After an outage the missed cycles are run, or marked `skipped`, as
`operations.catch_up` says; nothing runs twice, because the store says what is done and the
deployment allows one run at a time.
"""

import math
import time

import pandas as pd
from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run

import storage
import tasks

from ._flows import _tick, cycle_flow, cycles_to_do


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
    ends = [exp.axis.point(i) + exp.axis.interval for i in todo]
    recent = [now - end <= lag for end in ends]
    run = [i for i, ok in zip(todo, recent, strict=True) if ok]
    skip = [i for i, ok in zip(todo, recent, strict=True) if not ok]
    return run, skip, f"catch-up policy max_lag {ops.max_lag}: its window ended too long ago"


def _run_name() -> str:
    exp = tasks.experiment(flow_run.parameters["config"])
    return f"{exp.name}/scheduled {storage.cycle_id(_scheduled_time())}"


@flow(name="scheduled-cycling", flow_run_name=_run_name, persist_result=False)
def scheduled_flow(config: str, at: str | None = None) -> dict:
    """Every due cycle that is not done, after the catch-up policy, each as a `cycle` run.
    `at`: the time to run as of (default: the run's scheduled time)."""
    exp = tasks.experiment(config)
    log = get_run_logger()
    now = _due_time()
    latest = latest_due(exp, now)
    if latest < 0:
        log.info("%s: no cycle is due at %s", exp.name, storage.iso(now))
        return {"ran": [], "skipped": []}
    t0 = time.perf_counter()
    statuses = {}
    with tasks.open_writer(exp) as store:
        todo = cycles_to_do(exp, store, exp.axis.origin, exp.axis.point(latest), rerun=False)
        run, skip, reason = catch_up(exp, todo, now)
        for i in skip:
            store.write_cycle(exp.axis.point(i), {"status_reason": reason}, "skipped")
        if skip:
            log.warning(
                "%s: %d missed cycles skipped (%s … %s): %s",
                exp.name,
                len(skip),
                storage.cycle_id(exp.axis.point(skip[0])),
                storage.cycle_id(exp.axis.point(skip[-1])),
                reason,
            )
        with tags(*exp.tags):
            for n, i in enumerate(run, 1):
                cycle = storage.cycle_id(exp.axis.point(i))
                statuses[cycle] = cycle_flow(config, cycle)
                _tick(n, len(run), cycle, statuses[cycle])
    log.info(
        "%s: ran %d cycles, skipped %d, in %.1f s",
        exp.name,
        len(run),
        len(skip),
        time.perf_counter() - t0,
    )
    return {
        "ran": list(statuses),
        "statuses": statuses,
        "skipped": [storage.cycle_id(exp.axis.point(i)) for i in skip],
    }
