"""A cycle's outcome for the store: its status and reason (the gate's verdict under the
configured policy) and its store record — one place for the per-cycle and the block path."""

from dataclasses import dataclass

import jax
import numpy as np

import storage
import vardax_core as vc

from ._observations import Observations

GATE_FAILED, GATE_PASSED, GATE_NOT_RUN = (
    storage.GATE_VERDICT.index(v) for v in ("failed", "passed", "not_run")
)
ORACLE = vc.HANDED_ON.index("oracle")


@dataclass
class Verdict:
    """What the gate step decided: the store `status`, its `reason` and the `gate_verdict`
    code."""

    status: str
    reason: str
    gate_code: int


def _result_note(analysis: vc.Analysis | None) -> str:
    code = -1 if analysis is None else int(vc.result_code(analysis.result))
    if code <= 0:  # not run, or successful
        return ""
    return f"analysis {vc.result_name(code)}: {vc.result_message(code)}"


def verdict(exp, obs: Observations, record: vc.CycleRecord) -> Verdict:
    """The status of one cycle (host arrays, no batch axis): forecast-only without
    observations; committed when the gate passed; else by the gate's policy — degraded
    (the background, or a learned method's oracle, handed on) or failed (`halt`)."""
    report = record.gate
    if report is None or int(report.n_obs) == 0:
        why = obs.reason or "no observations to assimilate"
        return Verdict("degraded", f"forecast-only: {why}", GATE_NOT_RUN)
    note = _result_note(record.analysis)
    if bool(report.passed):
        return Verdict("committed", note, GATE_PASSED)
    what = "; ".join(filter(None, [exp.core.gate.explain(report), note]))
    if int(record.handed_on) == ORACLE:
        reason = (
            f"gate: {what}; handed on the strong-4DVar oracle's analysis "
            "(gates.oracle.on_failure oracle)"
        )
        return Verdict("degraded", reason, GATE_FAILED)
    if exp.cfg.gates.policy == "halt":
        return Verdict("failed", f"gate: {what} (policy halt)", GATE_FAILED)
    return Verdict(
        "degraded", f"gate: {what}; carried the background (policy fallback)", GATE_FAILED
    )


def verdicts(exp, obs: list[Observations], out: vc.CycleRecord) -> list[Verdict]:
    """The `verdict` of each of the first `len(obs)` cycles of a block's records (batched
    over cycles)."""
    one = lambda c: jax.tree_util.tree_map(lambda a: a[c], out)  # noqa: E731
    return [verdict(exp, o, one(c)) for c, o in enumerate(obs)]


def cycle_fields(
    exp, obs: Observations, record: vc.CycleRecord, v: Verdict, timings: dict, whole=False
) -> dict[str, np.ndarray]:
    """The store variables of one cycle (states flat; `Experiment.fields` shapes them);
    `whole`: the cycle could assimilate its whole window (`vardax_core.Cycle.assimilate`).
    `block_fields` of a block of one."""
    batched = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], record)
    data = block_fields(exp, [obs], batched, [v], timings, whole)
    return {k: a[0] for k, a in data.items()}


def block_fields(
    exp,
    obs: list[Observations],
    out: vc.CycleRecord,
    vs: list[Verdict],
    timings: dict,
    fresh=False,
) -> dict[str, np.ndarray]:
    """The store variables of the first `len(obs)` cycles of `out` (records batched over
    cycles, with their verdicts `vs`), on a leading cycle axis for one region write;
    `fresh`: the first cycle could assimilate its whole window."""
    n = len(obs)
    take = lambda a: np.asarray(a)[:n]  # noqa: E731
    used = take(out.obs_mask).astype(bool)
    n_obs = used.reshape(n, -1).sum(axis=1)
    failed = np.array([v.status == "failed" for v in vs])
    # a failed cycle keeps its rejected analysis for inspection; nothing starts from it
    analysis = take(out.accepted)
    if out.analysis is not None:
        analysis = np.where(failed[:, None, None], take(out.analysis.trajectory), analysis)
    new_rows = [None if fresh and c == 0 else exp.core.new_rows for c in range(n)]
    data = {
        "background": take(out.background),
        "analysis": analysis,
        "obs_value": np.stack([o.values for o in obs]),
        "obs_error_std": np.stack([o.error_std for o in obs]),
        "obs_mask": used,
        "obs_qc": np.stack([o.flags(u, k) for o, u, k in zip(obs, used, new_rows, strict=True)]),
        "obs_source": np.array([o.source[-256:] for o in obs]),
        "obs_hash": np.array([o.content_hash for o in obs]),
        "status_reason": np.array([v.reason[:256] for v in vs]),
        "n_obs": n_obs,
        "gate_verdict": np.array([v.gate_code for v in vs]),
        **_gate_fields(out.gate, n_obs, take),
        **_analysis_fields(out.analysis, n_obs, take),
        **{k: np.full(n, value) for k, value in timings.items()},
    }
    if obs[0].positions is not None:
        parts = [o.position_fields(exp) for o in obs]
        data |= {k: np.stack([p[k] for p in parts]) for k in parts[0]}
    if np.shape(out.forecast)[1]:
        data["forecast"] = take(out.forecast)
    if out.background_ensemble is not None:
        data |= _ensemble_fields(out, failed, exp.shift, take)
    return data


def _analysis_fields(analysis: vc.Analysis | None, n_obs, take) -> dict:
    none = n_obs == 0  # forecast-only: no analysis ran on anything
    if analysis is None:
        analysis_nan = np.full(len(n_obs), np.nan)
        return {
            "cost_before": analysis_nan,
            "cost_after": analysis_nan,
            "iterations": np.zeros(len(n_obs), int),
            "result_code": np.full(len(n_obs), -1),
        }
    code = take(vc.result_code(analysis.result))
    return {
        "cost_before": np.where(none, np.nan, take(analysis.cost_before)),
        "cost_after": np.where(none, np.nan, take(analysis.cost_after)),
        "iterations": np.where(none, 0, take(analysis.iterations)),
        "result_code": np.where(none, -1, code),
    }


_GATE_FIELDS = {
    "innovation_mean": "innovation_mean",
    "innovation_chi2_dof": "chi2_dof",
    "increment_max_sigma": "increment_max_sigma",
    "oracle_max_sigma": "oracle_max_sigma",
}


def _gate_fields(report: vc.GateReport | None, n_obs, take) -> dict:
    if report is None:
        return {k: np.full(len(n_obs), np.nan) for k in _GATE_FIELDS}
    none = n_obs == 0
    return {k: np.where(none, np.nan, take(getattr(report, v))) for k, v in _GATE_FIELDS.items()}


def _ensemble_fields(out: vc.CycleRecord, failed, at: int, take) -> dict:
    """An ensemble's members and spreads `at` steps into the window, where the next cycle
    starts (the window end, unless windows overlap); a failed cycle keeps its rejected
    analysis ensemble, as it keeps the analysis."""
    members_b = take(out.background_ensemble)  # (cycles, N, W+1, n)
    background = members_b[:, :, at]
    members = take(out.accepted_ensemble)
    if out.analysis is not None and out.analysis.ensemble is not None:
        members = np.where(failed[:, None, None, None], take(out.analysis.ensemble), members)
    analysis = members[:, :, at]
    spread = lambda e: np.std(e, axis=1, ddof=1)  # noqa: E731
    data = {
        "background_ensemble": background,
        "analysis_ensemble": analysis,
        "background_spread": spread(background),
        "analysis_spread": spread(analysis),
        # at the window end, where the report sets it against the background's error
        "ensemble_spread": np.mean(spread(members_b[:, :, -1]), axis=-1),
    }
    if out.forecast_spread is not None and np.size(out.forecast_spread):
        data["forecast_spread"] = take(out.forecast_spread)
    return data
