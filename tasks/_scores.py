"""Scores of a run: a store against its OSSE's truth (what a report and a sweep show), and
the pure-JAX loop on the same OSSE (what the pipeline must reproduce)."""

from dataclasses import dataclass

import equinox as eqx
import jax
import numpy as np

import storage
import vardax_core as vc

from ._experiment import experiment
from ._osse import osse_hash, osse_problem
from ._restart import initial_state

_run_cycles = eqx.filter_jit(vc.run_cycles)


def store_scores(store_url, truth_url, start: int = 0, stop=None, storage_options=None) -> dict:
    """Time-mean window-end RMSE (`"analysis"`, `"background"`) of cycles `start:stop` of a
    store against an OSSE nature run: what `vardax_core.cycle_scores` gives in memory."""
    ends = storage.read_window_ends(
        store_url, slice(start, stop), truth_url=truth_url, storage_options=storage_options
    )
    s = vc.window_end_scores(ends.analysis, ends.background, ends.truth)
    return {
        "analysis": float(s["mean_rmse_analysis"]),
        "background": float(s["mean_rmse_background"]),
    }


def reference_scores(config: str, cycles: int, seed: int = 0, spinup: int = 0) -> dict:
    """`vardax_core.run_cycles` with the experiment's cycle (the same background check,
    method and gate) on the OSSE `simulate` writes (`seed`). **Returns** the time-mean
    window-end RMSEs after `spinup` cycles (`"analysis"`: what each cycle handed on,
    `"background"`) and the loop's records (`"output"`)."""
    exp = experiment(config)
    problem = osse_problem(exp, cycles, seed)
    first = initial_state(exp, problem.first_background)
    out = _run_cycles(exp.core, first, problem.obs, cycles)
    scores = vc.cycle_scores(out, problem.truth, exp.window, exp.shift, spinup=spinup)
    return {
        "analysis": float(scores["analysis"]),
        "background": float(scores["background"]),
        "output": out,
    }


@dataclass(frozen=True)
class ReportData:
    """What a report draws: the store's status table, the window ends of its done cycles
    (`storage.WindowEnds`) and their scores (`vardax_core.window_end_scores`)."""

    table: object
    ends: storage.WindowEnds
    scores: dict
    attrs: dict


def check_truth(store: storage.CycleStore, truth_url, storage_options=None) -> None:
    """Raises `storage.ObservationError` (exit code 2) when the nature run at `truth_url` was
    simulated for another experiment than the store's (its `osse_hash`), or has another
    state shape. A nature run that records no lineage (made by other code) is taken as it is."""
    truth = storage.read_nature_run(truth_url, storage_options=storage_options)
    recorded, text = truth.attrs.get("osse_hash"), store.attrs.get("config_text", "")
    if recorded and text and recorded != osse_hash(text):
        raise storage.ObservationError(
            f"truth {truth_url} was simulated for another OSSE (experiment "
            f"{truth.attrs.get('experiment', '?')!r}) than store {store.url}'s (experiment "
            f"{store.attrs.get('experiment', '?')!r}: model, observations or cycling differ); "
            "score it against the truth beside its own store"
        )
    want = tuple(n for _, n in store.layout.state_dims)
    if tuple(truth.shape[1:]) != want:
        raise storage.ObservationError(
            f"truth {truth_url} has states of shape {tuple(truth.shape[1:])}, store "
            f"{store.url} of shape {want}: score it against the truth of its own OSSE"
        )


def report_data(store_url, truth_url=None, storage_options=None) -> ReportData:
    """The report's data of the store at `store_url` (and the OSSE truth, when given)."""
    store = storage.CycleStore.open(store_url, storage_options=storage_options)
    if truth_url is not None:
        check_truth(store, truth_url, storage_options)
    table = store.status_table()
    done = np.flatnonzero(table["status"].isin(["committed", "degraded"]).to_numpy())
    ends = storage.read_window_ends(
        store_url, done, truth_url=truth_url, storage_options=storage_options
    )
    chi2 = table["innovation_chi2_dof"].to_numpy()[done]
    scores = {}
    if len(done):
        scores = jax.device_get(
            vc.window_end_scores(ends.analysis, ends.background, ends.truth, chi2)
        )
    return ReportData(table, ends, {k: np.asarray(v) for k, v in scores.items()}, store.attrs)
