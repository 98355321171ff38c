"""The logger of the current Prefect run (its lines reach the UI), or a plain logger
outside one (the tasks' functions called directly)."""

import logging


def run_logger():
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("vardax.tasks")
