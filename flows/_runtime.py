"""Prefect's settings for the pipeline, set by an explicit call before Prefect is imported
(the CLI makes it first thing; a script that runs the flows may too): Prefect reads its
settings when it is imported."""

import os

PREFECT_DEFAULTS = {
    # Prefect's embedded server can take 15–25 s to start on a small machine (longer than
    # its default timeout of 20 s); telemetry needs a network a cycling host may not have
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
"""The defaults (an environment variable set by the user wins)."""


def configure_prefect(verbose: bool = True) -> None:
    """Sets `PREFECT_DEFAULTS` where the environment does not; with `verbose=False`, Prefect's
    console handler shows errors only (the run's logs still reach the API and the UI)."""
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
