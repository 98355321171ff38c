"""A real Prefect server on loopback, `vardax-cycle serve` with a seconds-long interval:
scheduled runs happen, are named, carry artifacts, and the store holds their cycles once;
after an outage of the served deployment the catch-up policy (`latest`) skips the backlog."""

import os
import signal
import subprocess
import time

import httpx
import pandas as pd
import pytest
from _pipeline_helpers import ROOT, experiment_config
from _server_helpers import as_from_a_shell, exe

import storage
import tasks
from flows import _flows


@pytest.mark.slow
def test_served_deployment_runs_scheduled_cycles(prefect_server, prefect_api, tmp_path):
    interval = 10
    now = pd.Timestamp.now(tz="UTC").tz_localize(None).floor(f"{interval}s")
    origin = now - pd.Timedelta(seconds=interval)  # cycle 0 is due now
    cfg = experiment_config(
        tmp_path,
        "l96-3dvar",
        experiment="served",
        cycling__origin=origin.strftime("%Y-%m-%dT%H:%M:%SZ"),
        cycling__interval=f"PT{interval}S",
        operations={"catch_up": "latest"},
    )
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 40, 0)  # observations ahead of time (an OSSE)
    env = os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    api = httpx.Client(base_url=prefect_server, timeout=10)

    def serve():
        log = open(tmp_path / "serve.log", "a")
        return subprocess.Popen(
            [exe("vardax-cycle"), "serve", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_from_a_shell,
        )

    def completed_scheduled() -> list[dict]:
        runs = api.post("/flow_runs/filter", json={"limit": 200, "sort": "NAME_ASC"}).json()
        return [
            r
            for r in runs
            if r["name"].startswith("served/scheduled") and r["state_type"] == "COMPLETED"
        ]

    def wait_for(n: int, proc) -> None:
        deadline = time.time() + 150
        while len(completed_scheduled()) < n:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, (
                f"fewer than {n} scheduled runs completed; serve log:\n"
                + (tmp_path / "serve.log").read_text()[-3000:]
            )
            time.sleep(2)

    proc = serve()
    try:
        wait_for(3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    # an outage of several intervals, then the deployment is served again
    before = len(completed_scheduled())
    time.sleep(4 * interval)
    proc = serve()
    try:
        wait_for(before + 1, proc)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    runs = api.post("/flow_runs/filter", json={"limit": 200, "sort": "NAME_ASC"}).json()
    deployments = api.post("/deployments/filter", json={"limit": 10}).json()
    assert [d["name"] for d in deployments] == ["served"]
    assert deployments[0]["global_concurrency_limit"]["limit"] == 1
    cycle_runs = [r for r in runs if r["name"].startswith("served/2")]
    done = [r for r in cycle_runs if r["state_type"] == "COMPLETED"]
    assert len(done) >= 3
    names = [r["name"] for r in done]
    assert len(names) == len(set(names)), "a cycle ran twice"
    assert all({"served", "3dvar"} <= set(r["tags"]) for r in done)
    artifacts = api.post(
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["served-cycle-diagnostics"]}}, "limit": 200},
    ).json()
    assert {a["flow_run_id"] for a in artifacts} >= {r["id"] for r in done}
    assert artifacts[0]["type"] == "table"
    store = storage.CycleStore.open(exp.store_url)
    table = store.status_table()
    done = {storage.cycle_id(p) for p in store.committed_cycles()}
    assert {n.split("/")[1] for n in names} <= done
    # the outage's backlog was skipped by the policy, and no cycle is left behind
    last = max(i for i, s in enumerate(table["status"]) if s != "empty")
    statuses = [str(s) for s in table["status"].iloc[: last + 1]]
    assert "empty" not in statuses and "failed" not in statuses
    skipped = table[table["status"] == "skipped"]
    assert len(skipped) >= 2, statuses
    assert skipped["status_reason"].str.contains("catch-up policy latest").all()
