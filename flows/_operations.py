"""Unattended cycling: the scheduled flow a deployment runs, with a catch-up policy, and
the deployment that schedules it.

A scheduled run at time T processes every cycle that is due — its window ended by T — and
is not done. After an outage the missed cycles are run, or marked `skipped`, as
`operations.catch_up` says; nothing runs twice, because the store says what is done and the
deployment allows one run at a time.
"""

import math
import os
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
    elapsed = (now - exp.axis.origin - exp.window_span) / exp.axis.interval
    return math.floor(elapsed + 1e-9)


def catch_up(exp, todo: list[int], now: pd.Timestamp) -> tuple[list[int], list[int], str]:
    """Splits the cycles to do into (run, skip, reason) by `operations.catch_up`."""
    ops = exp.cfg.operations
    if ops.catch_up == "all" or len(todo) <= 1:
        return todo, [], ""
    if ops.catch_up == "latest":
        return todo[-1:], todo[:-1], "catch-up policy latest: skipped for the newest cycle"
    lag = pd.Timedelta(ops.max_lag)
    recent = [now - (exp.axis.point(i) + exp.window_span) <= lag for i in todo]
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
    first = exp.axis.origin + exp.window_span  # the first window ends here
    return Interval(
        timedelta(seconds=exp.axis.interval.total_seconds()),
        anchor_date=first.to_pydatetime().replace(tzinfo=UTC),
        timezone="UTC",
    )


ONE_RUN_AT_A_TIME = {"limit": 1, "collision_strategy": "ENQUEUE"}
"""The deployment's concurrency limit: a run due while another runs waits for the slot."""


def _description(exp) -> str:
    return f"{exp.cfg.description} — scheduled cycling into {_shown(exp.store_url)}"


def _shown(url: str) -> str:
    """A local path under this directory relative to it (the config resolves it to an
    absolute one; the description stays the same on every checkout), else as it is."""
    if "://" in url or not os.path.isabs(url):
        return url
    relative = os.path.relpath(url)
    return url if relative.startswith("..") else relative


def deployment(config, *, module_entrypoint: bool = False, job_variables: dict | None = None):
    """The experiment's deployment of `scheduled_flow`, as `serve` and `deploy` register it:
    its schedule, the config as parameter (an absolute path), its tags, and
    `ONE_RUN_AT_A_TIME`.
    `module_entrypoint`: the flow is found by module (`flows._operations.scheduled_flow`) in
    the project as installed where it runs, not by this checkout's file path."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType

    exp = tasks.experiment(config)
    return scheduled_flow.to_deployment(
        name=exp.name,
        schedules=[schedule(exp)],
        parameters={"config": str(Path(config).resolve())},
        tags=exp.tags,
        concurrency_limit=ConcurrencyLimitConfig(**ONE_RUN_AT_A_TIME),
        description=_description(exp),
        job_variables=job_variables or {},
        entrypoint_type=EntrypointType.MODULE_PATH
        if module_entrypoint
        else EntrypointType.FILE_PATH,
    )


def serve(config) -> None:
    """Serves the experiment's deployment in this process. Needs a running server."""
    from prefect import serve as serve_deployments

    serve_deployments(deployment(config))


def crash_unresponsive_runs(client, exp, within_s: float):
    """Prefect's answer to a run whose host died (a "zombie": Running for ever, holding its
    deployment's one slot for the engine's lease of 300 s, renewed as long as it lived): an
    automation that marks the experiment's runs `Crashed` when their heartbeats stop for
    `within_s`, which frees the slot for the next scheduled run. Replaces an older one.
    **Returns** the automation's id."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    name = f"{exp.name}: crash runs whose heartbeats stopped"
    for old in client.read_automations_by_name(name):
        client.delete_automation(old.id)
    ends = ("heartbeat", "Completed", "Failed", "Cancelled", "Crashed")
    return client.create_automation(
        AutomationCore(
            name=name,
            description=f"Marks a flow run of {exp.name} Crashed after {within_s:.0f} s "
            "without a heartbeat (its process or host is gone), so its work can be resumed.",
            trigger=EventTrigger(
                match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
                match_related=ResourceSpecification(
                    {"prefect.resource.id": f"prefect.tag.{exp.name}"}
                ),
                after={"prefect.flow-run.heartbeat"},
                expect={f"prefect.flow-run.{e}" for e in ends},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=within_s),
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    message=f"no heartbeat for {within_s:.0f} s: its process or host is gone",
                )
            ],
        )
    )


def deploy(
    config,
    pool: str,
    *,
    pool_type: str = "process",
    working_dir: str | None = None,
    heartbeat_s: int = 30,
    crash_after_s: float = 90.0,
) -> dict:
    """Registers the experiment's deployment in the work pool `pool` (created, of
    `pool_type`, if missing); `prefect worker start --pool POOL` on any machine with the
    project installed then runs its cycles. A `process` worker runs each in `working_dir`
    (default: this directory); the config's own paths are relative to its folder. Its runs send a
    heartbeat every `heartbeat_s` (Prefect's minimum is 30), and a run silent for
    `crash_after_s` (more than `heartbeat_s`) is marked crashed (`crash_unresponsive_runs`).
    **Returns** the deployment's name and id, and the pool's name and type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    exp = tasks.experiment(config)
    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(pool)
        except ObjectNotFound:
            found = client.create_work_pool(WorkPoolCreate(name=pool, type=pool_type))
        job_variables = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_s)}}
        if found.type == "process":
            job_variables["working_dir"] = str(Path(working_dir or Path.cwd()).resolve())
        dep = deployment(config, module_entrypoint=True, job_variables=job_variables)
        deployment_id = dep.apply(work_pool_name=pool)
        crash_unresponsive_runs(client, exp, crash_after_s)
    return {
        "deployment": f"{scheduled_flow.name}/{dep.name}",
        "id": str(deployment_id),
        "pool": found.name,
        "pool_type": found.type,
    }


def _schedule_spec(exp) -> dict:
    """`schedule(exp)` as a `prefect.yaml` schedule entry."""
    made = schedule(exp)
    if made.cron:
        return {"cron": made.cron, "timezone": made.timezone}
    return {
        "interval": int(made.interval.total_seconds()),
        "anchor_date": made.anchor_date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timezone": made.timezone,
    }


def prefect_yaml(config_paths, pool: str = "vardax-cycle") -> str:
    """The project's `prefect.yaml`: for each config (a path relative to the project root),
    the deployment `deploy` registers — its schedule, parameters, tags and one run at a time —
    in the work pool `pool`. `prefect deploy` adds the pull step that runs it in the checkout
    it was deployed from, where the relative config paths resolve (and a config's own
    paths are relative to its folder)."""
    import prefect
    import yaml

    entries = []
    for path in config_paths:
        exp = tasks.experiment(path)
        entries.append(
            {
                "name": exp.name,
                "description": _description(exp),
                "entrypoint": "flows/_operations.py:scheduled_flow",
                "parameters": {"config": str(path)},
                "tags": exp.tags,
                "schedules": [_schedule_spec(exp)],
                "concurrency_limit": dict(ONE_RUN_AT_A_TIME),
                "work_pool": {"name": pool},
            }
        )
    head = (
        "# The shipped configs' scheduled deployments, as `vardax-cycle deploy CONFIG --pool "
        f"{pool}` registers them.\n"
        f"# Create the pool once (`prefect work-pool create {pool} --type process`), then\n"
        "# `prefect deploy -n l96-4dvar` (or --all) from the project root; workers:\n"
        f"# `prefect worker start --pool {pool}`. Written by `make prefect.yaml` from configs/.\n"
    )
    body = {
        "name": "vardax-cycle",
        "prefect-version": prefect.__version__,
        "deployments": entries,
    }
    return head + yaml.safe_dump(body, sort_keys=False, width=200, allow_unicode=True)


if __name__ == "__main__":  # python -m flows._operations CONFIG… > prefect.yaml
    import sys

    print(prefect_yaml(sys.argv[1:]), end="")
