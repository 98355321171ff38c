"""Prefect's settings for the pipeline, set by an explicit call before Prefect is imported
(the CLI makes it first thing; a script that runs the flows may too): Prefect reads its
settings when it is imported."""

import os

SERVER_DEFAULTS = {
    # telemetry needs a network a cycling host may not have
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The task-run recorder writes each task-run event in a transaction of its own (batch
    # size 1). On SQLite those writes collide with the API's own (creating the next flow
    # run or its parent task run): the API answers 503 "database is locked" and the client
    # retries 2 s later — one such stall per cycle or more. Recording in batches, at least
    # once a second, leaves the collisions rare and halves the server's CPU per cycle
    # (bench/pipeline.py); the UI shows a task's state up to a second later.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}
"""Settings of a Prefect server for cycling: the embedded server (started by this process
with its environment), `vardax-cycle server`, and the tests' servers."""

PREFECT_DEFAULTS = SERVER_DEFAULTS | {
    # Prefect's embedded server can take 15–25 s to start on a small machine (longer than
    # its default timeout of 20 s)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
"""The defaults (an environment variable set by the user wins)."""


def server_environment(environ=None) -> dict[str, str]:
    """`environ` (the process's environment) with `SERVER_DEFAULTS` where it sets nothing."""
    return SERVER_DEFAULTS | dict(os.environ if environ is None else environ)


def configure_prefect(verbose: bool = True) -> None:
    """Sets `PREFECT_DEFAULTS` where the environment does not; with `verbose=False`, Prefect's
    console handler shows errors only (the run's logs still reach the API and the UI)."""
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
