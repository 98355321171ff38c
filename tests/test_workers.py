"""Cycling on several workers: an experiment deployed to a Prefect work pool (`vardax-cycle
deploy`), two `prefect worker` processes on it, the store on a loopback S3 server. The worker
running a scheduled run is SIGKILLed mid-cycle with the run's process, as when its host dies;
the other worker's later runs resume. Every due cycle ends committed, none ran to completion
twice, no two scheduled runs overlapped, and the store equals an uninterrupted run's. And the
project's `prefect.yaml` is what `deploy` registers, and `prefect deploy` takes it."""

import os
import signal
import subprocess
import time

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from _pipeline_helpers import ROOT, experiment_config, store_arrays
from _server_helpers import as_from_a_shell, exe, stop
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

import storage
import tasks
from flows import _flows, _operations
from flows.cli import app

INTERVAL = 10  # seconds between scheduled runs (and cycles)


def _deploy(server: str, *args) -> str:
    """`vardax-cycle deploy …` in this process against `server`; **returns** its output."""
    with temporary_settings({PREFECT_API_URL: server}):
        result = CliRunner().invoke(
            app, ["deploy", *args], env={"PREFECT_API_URL": server}, terminal_width=200
        )
    assert result.exit_code == 0, result.output
    return result.output


def _overlaps(runs: list[dict]) -> list[tuple[str, str]]:
    spans = sorted(
        (pd.Timestamp(r["start_time"]), pd.Timestamp(r["end_time"] or pd.Timestamp.now("UTC")), r)
        for r in runs
        if r["start_time"]
    )
    return [
        (a[2]["name"], b[2]["name"]) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]
    ]


@pytest.mark.slow
def test_two_workers_share_a_pool_and_an_s3_store_through_a_sigkill(
    prefect_server, prefect_api, s3_bucket, tmp_path
):
    bucket, options = s3_bucket
    now = pd.Timestamp.now(tz="UTC").tz_localize(None).floor(f"{INTERVAL}s")
    changes = {
        "cycling__origin": (now - 5 * pd.Timedelta(seconds=INTERVAL)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "cycling__interval": f"PT{INTERVAL}S",
        "operations": {"catch_up": "all"},
    }
    cfg = experiment_config(tmp_path, "l96-3dvar", experiment="pooled", **changes)
    data = yaml.safe_load(cfg.read_text())
    data["store"] = {"url": f"{bucket}/pooled/store.zarr", "storage_options": options}
    cfg.write_text(yaml.safe_dump(data))
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 60, 0)  # the OSSE, on S3 beside the store
    out = _deploy(prefect_server, str(cfg), "--pool", "cycling", "--crash-after", "35")
    assert "deployed scheduled-cycling/pooled" in out and "process pool 'cycling'" in out

    env = os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }

    def worker(name: str):
        return subprocess.Popen(
            [exe("prefect"), "worker", "start", "--pool", "cycling", "--name", name],
            cwd=tmp_path,
            env=env,
            stdout=open(tmp_path / f"{name}.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_from_a_shell,  # so that SIGINT stops it
        )

    def logs() -> str:
        runs = "\n".join(
            f"{r['name']}: {r['state_name']} {r['start_time']}–{r['end_time']}" for r in flow_runs()
        )
        files = "\n".join(
            f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(tmp_path.glob("w*.log"))
        )
        return f"flow runs:\n{runs}\n{files}"

    def statuses() -> list[str]:
        try:  # the store may not exist yet, or its creation may be under way
            store = storage.CycleStore.open(exp.store_url, storage_options=options)
            return [str(s) for s in store.status_table()["status"]]
        except (storage.StoreError, KeyError):
            return []

    api = httpx.Client(base_url=prefect_server, timeout=10)

    def flow_runs() -> list[dict]:
        return api.post("/flow_runs/filter", json={"limit": 200, "sort": "NAME_ASC"}).json()

    workers = {name: worker(name) for name in ("w1", "w2")}
    try:
        # the first scheduled run has the backlog of five cycles: kill it after its first commit
        deadline = time.time() + 120
        while statuses().count("committed") < 1:
            assert all(p.poll() is None for p in workers.values()), logs()
            assert time.time() < deadline, "no cycle was committed\n" + logs()
            time.sleep(0.2)
        holder = storage.CycleStore.open(exp.store_url, storage_options=options).lock_holder()
        assert holder is not None, "the scheduled run holds no lock on the store"
        run_process = psutil.Process(holder.pid)
        parents = {p.pid for p in run_process.parents()}
        (victim,) = [n for n, p in workers.items() if p.pid in parents]
        run_process.kill()  # the host dies: the run's process and its worker at once
        stop(workers.pop(victim), signal.SIGKILL)
        at_kill = statuses()
        killed_at = pd.Timestamp.now(tz="UTC").tz_localize(None)
        assert at_kill.count("committed") < _operations.latest_due(exp, killed_at) + 1, (
            "the run finished its backlog before the kill"
        )
        # the automation crashes the silent run, which frees the slot: the other worker's
        # next scheduled run takes it and resumes the store
        target = _operations.latest_due(exp, killed_at) + 2
        deadline = time.time() + 180
        while statuses()[:target].count("committed") < target:
            assert all(p.poll() is None for p in workers.values()), logs()
            assert time.time() < deadline, f"cycles {statuses()[:target]} after the kill\n" + logs()
            time.sleep(1)
    finally:
        for p in workers.values():
            stop(p, signal.SIGINT)

    table = statuses()
    last = max(i for i, s in enumerate(table) if s == "committed")
    assert set(table[: last + 1]) == {"committed"}, table
    runs = flow_runs()
    cycle_runs = [r for r in runs if r["name"].startswith("pooled/2")]
    done = [r["name"] for r in cycle_runs if r["state_type"] == "COMPLETED"]
    assert len(done) == len(set(done)), "a cycle ran to completion twice"
    committed = {storage.cycle_id(exp.axis.point(i)) for i in range(last + 1)}
    assert {n.split("/")[1] for n in done} <= committed
    scheduled = [r for r in runs if r["name"].startswith("pooled/scheduled")]
    finished = [r for r in scheduled if r["end_time"]]  # the killed run never ends
    assert len(finished) >= 1 and _overlaps(finished) == [], _overlaps(finished)
    crashed = [r for r in scheduled if r["state_type"] == "CRASHED"]
    assert len(crashed) == 1 and "no heartbeat" in crashed[0]["state"]["message"], crashed
    started = [r for r in scheduled if r["start_time"]]
    resumed = [r for r in started if pd.Timestamp(r["start_time"]).tz_localize(None) > killed_at]
    assert resumed, "no scheduled run started after the kill"

    # the same cycles without workers or a kill, into a store of their own
    (tmp_path / "ref").mkdir()
    ref = experiment_config(tmp_path / "ref", "l96-3dvar", experiment="pooled", **changes)
    _flows.simulate_flow(str(ref), 60, 0)
    _flows.cycling_flow(str(ref), end=storage.cycle_id(exp.axis.point(last)))
    expected = store_arrays(tasks.experiment(ref).store_url, last + 1)
    got = store_arrays(exp.store_url, last + 1, options)
    assert got.keys() == expected.keys()
    for name in expected:
        if name != "obs_source":  # the run's own file path; obs_hash compares the content
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_prefect_yaml_is_what_deploy_registers(monkeypatch):
    """The root prefect.yaml lists every shipped config as `deploy` would register it (the
    same schedule, parameters, tags, one run at a time), in the form `prefect deploy` reads."""
    from prefect.cli.deploy._models import PrefectYamlModel

    monkeypatch.chdir(ROOT)  # the file's paths are relative to the project root
    shipped = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.yaml"))
    text = (ROOT / "prefect.yaml").read_text()
    assert text == _operations.prefect_yaml(shipped), "prefect.yaml is stale: run make prefect.yaml"
    model = PrefectYamlModel.model_validate(yaml.safe_load(text))
    assert [d.name for d in model.deployments] == [tasks.experiment(ROOT / p).name for p in shipped]
    for entry, path in zip(model.deployments, shipped, strict=True):
        exp = tasks.experiment(ROOT / path)
        (spec,) = entry.schedules
        made = _operations.schedule(exp)
        if exp.cfg.operations.cron:
            assert spec.cron == made.cron
        else:
            assert spec.interval == made.interval
            assert pd.Timestamp(spec.anchor_date) == pd.Timestamp(made.anchor_date)
        assert entry.concurrency_limit.limit == 1
        assert entry.parameters == {"config": path} and entry.tags == exp.tags
