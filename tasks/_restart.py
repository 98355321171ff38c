"""Where a cycle starts from (the restart policy): the previous cycle's accepted trajectory
in the store at this cycle's point (its window end, or `shift_steps` into it when windows
overlap); after cycles skipped by the catch-up policy, the last analysis
forecast across them (`operations.after_skip: carry`) or a cold start (`cold`); a cold start
for the first cycle — the OSSE's first guess, or the model's climatological mean.

For an ensemble method the state is the ensemble `(N, n)`: the previous cycle's stored
`analysis_ensemble`, each member carried across skipped cycles, or cold — the OSSE's first
guess spread by `B`, or without a truth `N` states of a free model run (the climatology),
drawn with the random key of the experiment's seed and the cycle's index."""

import equinox as eqx
import jax
import numpy as np

import storage
import vardax_core as vc

forecast = eqx.filter_jit(lambda model, x, n: model.rollout(x, n))
"""`model.rollout(x, n)`, jitted: a forecast of `n` model steps (compiled once per `n`)."""

members_forecast = eqx.filter_jit(lambda model, E, n: jax.vmap(lambda x: model.rollout(x, n))(E))
_initial_ensemble = eqx.filter_jit(vc.initial_ensemble)

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


def initial_state(exp, x, index: int = 0) -> np.ndarray:
    """The state a cold start at cycle `index` begins from, given the first guess `x`: `x`
    itself, or an ensemble method's members around it (`vardax_core.initial_ensemble`,
    keyed by the seed and `index`)."""
    core = exp.core
    if not core.ensemble:
        return np.asarray(x)
    key = vc.cycle_key(core.seed, index, 0)
    return np.asarray(_initial_ensemble(x, exp.parts.prior_cov, key, core.method.members))


def _cold(exp, cycle: storage.CyclePoint) -> np.ndarray:
    if exp.core.ensemble and not exp.cfg.observations.simulated:
        key = vc.cycle_key(exp.core.seed, cycle.index, 0)
        members = exp.core.method.members
        return np.asarray(vc.climatological_ensemble(exp.climate_states(), key, members))
    return initial_state(exp, cold_start(exp), cycle.index)


def _handed_on(exp, store, cycle: storage.CyclePoint) -> np.ndarray:
    """What `cycle` hands on: its accepted state `shift` steps into its window (an
    ensemble's stored members, kept at that time)."""
    if exp.core.ensemble:
        members = store.read_cycle(cycle.time)["analysis_ensemble"]
        return np.reshape(members, (members.shape[0], -1))
    return np.reshape(store.read_cycle(cycle.time)["analysis"][exp.shift], -1)


def _carry(exp, x, n_steps: int) -> np.ndarray:
    if exp.core.ensemble:
        return np.asarray(members_forecast(exp.model, x, n_steps)[:, -1])
    return np.asarray(forecast(exp.model, x, n_steps)[-1])


def start_state(exp, store, cycle: storage.CyclePoint, cold: bool = False):
    """**Returns** `(state, where it comes from, fresh)` for `cycle`; `fresh`: no earlier
    window assimilated into the state (a cold start, or an analysis carried across skipped
    cycles), so every row of the cycle's window is new (`vardax_core.Cycle.assimilate`)."""
    if cycle.index == 0 or cold:
        return _cold(exp, cycle), "cold start", True
    previous = exp.axis.cycle(cycle.index - 1)
    status = store.status_of(previous.time)
    if status in DONE:
        return _handed_on(exp, store, previous), f"analysis of {previous}", False
    if status != "skipped":
        raise storage.CycleError(
            f"cycle {cycle} starts from the analysis of cycle {previous}, which is {status} in "
            f"{exp.store_url}: run from an earlier cycle (or start cold with --cold-start)"
        )
    done = np.flatnonzero(
        np.isin(store.statuses()[: cycle.index], [storage.STATUS.index(s) for s in DONE])
    )
    if exp.cfg.operations.after_skip == "cold" or len(done) == 0:
        return _cold(exp, cycle), "cold start after skipped cycles", True
    last = exp.axis.cycle(int(done[-1]))
    gap = cycle.index - 1 - last.index
    carried = _carry(exp, _handed_on(exp, store, last), gap * exp.shift)
    return carried, f"analysis of {last} carried over {gap} skipped cycles", True
