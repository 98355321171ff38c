"""Waiting for late observation files: until the cycle's cut-off, a file counts once its
size has stopped changing."""

import time

import pandas as pd

import storage

from ._log import run_logger


def cutoff_of(exp, cycle: storage.CyclePoint) -> pd.Timestamp | None:
    """The wall-clock time after which a cycle's observations count as late: its window
    end plus `observations.cutoff` (None: no waiting)."""
    cutoff = exp.cfg.observations.cutoff
    return None if not cutoff else cycle.time + exp.window_span + pd.Timedelta(cutoff)


def _stable(url: str, options, size: int, seconds: float) -> bool:
    if seconds == 0:
        return True
    time.sleep(seconds)
    return storage.file_size(url, options) == size


def wait_for_file(exp, url: str, cycle: storage.CyclePoint) -> str | None:
    """Waits for an observation file until the cycle's cut-off, polling every
    `observations.poll_seconds`; a file counts once its size is stable for
    `stable_seconds`. **Returns** None when it is there, else why it is not."""
    o = exp.cfg.observations
    options, deadline, said = exp.obs_storage_options, cutoff_of(exp, cycle), False
    while True:
        size = storage.file_size(url, options)
        if size is not None:
            if _stable(url, options, size, o.stable_seconds):
                return None
            continue  # still being written
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        if deadline is None or now >= deadline:
            by = f" by the cut-off {storage.iso(deadline)}" if deadline is not None else ""
            return f"no observation file {url}{by}"
        if not said:
            run_logger().info("waiting for %s until %s", url, storage.iso(deadline))
            said = True
        time.sleep(min(o.poll_seconds, max((deadline - now).total_seconds(), 0.01)))
