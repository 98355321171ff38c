"""A real Prefect server on loopback for the tests of scheduled and pooled cycling, and the
helpers that start the project's and Prefect's commands beside it."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flows._runtime import server_environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exe(name: str) -> str:
    """A console script of this environment (`prefect`, `vardax-cycle`)."""
    return str(Path(sys.executable).parent / name)


def as_from_a_shell() -> None:
    """A shell starts a command with Ctrl-C's default action; a test worker may have
    come to ignore SIGINT (an ignored signal stays ignored across exec), and a serve that
    ignores it never stops."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(folder: Path):
    """`prefect server start` (SQLite under `folder`) on a free loopback port, its scheduler
    every 5 s. **Returns** (process, API URL) once it answers."""
    port = free_port()
    env = server_environment() | {
        "PREFECT_HOME": str(folder / "prefect-home"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        # a run stopped or killed mid-cycle keeps its deployment slot until the lease
        # expires (300 s by default); the tests stop runs on purpose, so keep it short
        "PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": "30",
        # a run waiting for its deployment's slot asks again after this (30 s by default)
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
    }
    env.pop("PREFECT_API_URL", None)
    log = folder / "server.log"
    proc = subprocess.Popen(
        [exe("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "prefect server did not start"
        time.sleep(0.5)


def stop(proc, sig=signal.SIGTERM, timeout: float = 60) -> None:
    """Sends `sig` to the process group of `proc` (if it still runs) and waits for it; a
    process still there after `timeout` is killed, and that fails the test."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError(
            f"{proc.args} did not stop on signal {sig} within {timeout} s"
        ) from None
