"""Resume after a crash: the CLI run SIGKILLed at a random moment, then the same command
again, leaves a store equal, bit for bit, to an uninterrupted run's — for a single state
(l63-3dvar) and for an ensemble, whose random numbers are keyed by the seed and the cycle
(l96-etkf)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _pipeline_helpers import ROOT, experiment_config, store_arrays

import storage
from flows import _flows

N = 10
END = "20260103T0600Z"  # cycle 9 (every 6 h from 2026-01-01)


def _cli(*args) -> list[str]:
    exe = Path(sys.executable).parent / "vardax-cycle"
    if exe.exists():
        return [str(exe), *args]
    return [sys.executable, "-c", "from flows.cli import app; app()", *args]


def _env(api_url: str) -> dict:
    return os.environ | {"PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _committed(url) -> int:
    try:
        return int(np.isin(storage.CycleStore.open(url).statuses(), storage.DONE).sum())
    except (storage.StoreError, FileNotFoundError, KeyError, ValueError):
        return 0  # not created yet


def _experiment(tmp_path, name, shipped):
    folder = tmp_path / name
    folder.mkdir()
    cfg = experiment_config(folder, shipped, experiment=f"resume-{shipped}")
    _flows.simulate_flow(str(cfg), N, 0)  # the same OSSE (seed 0) in every folder
    return cfg, folder / "store.zarr"


@pytest.mark.slow
# one kill each: a crash after every chunk put of a write is tests/test_faults_store.py's
@pytest.mark.parametrize(("shipped", "kills"), [("l63-3dvar", (3,)), ("l96-etkf", (4,))])
def test_sigkilled_cli_run_resumes_to_the_uninterrupted_store(
    prefect_api, tmp_path, shipped, kills
):
    env = _env(prefect_api)
    cfg, reference = _experiment(tmp_path, "reference", shipped)
    done = subprocess.run(
        _cli("run", str(cfg), "--end", END), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = store_arrays(reference, N)
    assert (expected["status"] == storage.STATUS.index("committed")).all()

    # a live writer holds the store: the CLI refuses it, naming the holder, and writes nothing
    with storage.CycleStore.open(reference, mode="a"):
        refused = subprocess.run(
            _cli("backfill", str(cfg), "--start", "20260101T0000Z", "--end", END, "--rerun"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    assert refused.returncode == 3, refused.stdout + refused.stderr
    said = " ".join(refused.stdout.split())  # rich wraps lines
    assert "locked by another writer" in said and f"pid {os.getpid()}" in said
    unchanged = store_arrays(reference, N)
    for name in expected:
        np.testing.assert_array_equal(unchanged[name], expected[name], err_msg=name)

    rng = random.Random(20261122)
    for kill_after in kills:
        cfg, url = _experiment(tmp_path, f"killed-{kill_after}", shipped)
        proc = subprocess.Popen(
            _cli("run", str(cfg), "--end", END),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.time() + 240
        while _committed(url) < kill_after:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the run made no progress"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))  # somewhere inside a cycle
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert _committed(url) < N, "the run finished before the kill"

        again = subprocess.run(
            _cli("run", str(cfg), "--end", END), cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already done" in again.stdout
        resumed = store_arrays(url, N)
        assert resumed.keys() == expected.keys()
        for name in expected:
            if name != "obs_source":  # the folder's own file path; obs_hash compares content
                np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
