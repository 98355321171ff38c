import jax
import pytest

import tasks

# The pipeline's runtime for the whole session: double precision (the science tests compare
# against finite differences and across methods to 1e-4 and tighter) and JAX's persistent
# compilation cache, which the two workers share (what one compiles the other loads).
tasks.configure_runtime()
assert jax.config.jax_enable_x64


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on loopback, for the session.

    **Yields** the `storage_options` that reach it.
    """
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start on loopback") from None
            time.sleep(0.2)
    try:
        yield {
            "key": "testing",
            "secret": "testing",
            "endpoint_url": endpoint,
            "client_kwargs": {"region_name": "eu-west-1"},
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the loopback S3 server; **yields** (`s3://bucket`, storage_options)."""
    import uuid

    import s3fs

    name = f"vardax-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**s3_server)
    fs.mkdir(name)
    yield f"s3://{name}", s3_server


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API server for the session (Prefect's test harness: a temporary
    database and a server process on loopback); flows in this process report to it.

    **Yields** its URL, for CLI subprocesses (`PREFECT_API_URL`)."""
    from flows._runtime import configure_prefect

    configure_prefect()  # the server process starts with the pipeline's server settings
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture
def prefect_server(tmp_path):
    """A real `prefect server start` of its own (SQLite under tmp_path, scheduler every 5 s)
    on a free loopback port; **yields** its API URL."""
    from _server_helpers import start_server, stop

    proc, url = start_server(tmp_path)
    try:
        yield url
    finally:
        stop(proc, timeout=30)
