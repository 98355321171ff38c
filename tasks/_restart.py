"""Where a cycle starts from (the restart policy): the end of the previous cycle's accepted
trajectory in the store; after cycles skipped by the catch-up policy, the last analysis
forecast across them (`operations.after_skip: carry`) or a cold start (`cold`); a cold start
for the first cycle — the OSSE's first guess, or the model's climatological mean."""

import equinox as eqx
import numpy as np

import storage

forecast = eqx.filter_jit(lambda model, x, n: model.rollout(x, n))
"""`model.rollout(x, n)`, jitted: a forecast of `n` model steps (compiled once per `n`)."""

DONE = ("committed", "degraded")


def cold_start(exp) -> np.ndarray:
    """The first cycle's state: the OSSE's first guess (written by `simulate`) for a
    synthetic source, else the mean of a free model run."""
    if not exp.cfg.observations.simulated:
        return exp.climate_mean()
    try:
        guess = storage.read_nature_run(
            exp.truth_url, storage_options=exp.storage_options, variable="first_guess"
        )
    except storage.ObservationError:
        raise storage.ObservationError(
            f"experiment {exp.name}: no OSSE at {exp.truth_url} (its first guess and "
            f"observations): run `vardax-cycle simulate {exp.config_path}` first"
        ) from None
    return np.reshape(guess.values, -1)


def _analysis_end(store, cycle: storage.CyclePoint) -> np.ndarray:
    return np.reshape(store.read_cycle(cycle.time)["analysis"][-1], -1)


def start_state(exp, store, cycle: storage.CyclePoint, cold: bool = False):
    """**Returns** `(state, where it comes from)` for `cycle`."""
    if cycle.index == 0 or cold:
        return cold_start(exp), "cold start"
    previous = exp.axis.cycle(cycle.index - 1)
    status = store.status_of(previous.time)
    if status in DONE:
        return _analysis_end(store, previous), f"analysis of {previous}"
    if status != "skipped":
        raise storage.CycleError(
            f"cycle {cycle} starts from the analysis of cycle {previous}, which is {status} in "
            f"{exp.store_url}: run from an earlier cycle (or start cold with --cold-start)"
        )
    done = np.flatnonzero(
        np.isin(store.statuses()[: cycle.index], [storage.STATUS.index(s) for s in DONE])
    )
    if exp.cfg.operations.after_skip == "cold" or len(done) == 0:
        return cold_start(exp), "cold start after skipped cycles"
    last = exp.axis.cycle(int(done[-1]))
    gap = cycle.index - 1 - last.index
    carried = forecast(exp.model, _analysis_end(store, last), gap * exp.window)[-1]
    return np.asarray(carried), f"analysis of {last} carried over {gap} skipped cycles"
