"""A cycle's outcome for the store: its status and reason (the gate's verdict under the
configured policy) and its store record — one place for the per-cycle and the block path."""

from dataclasses import dataclass

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


def _analysis_fields(analysis: vc.Analysis | None, n_obs: int) -> dict:
    if analysis is None or n_obs == 0:  # forecast-only: no analysis ran on anything
        return {"cost_before": np.nan, "cost_after": np.nan, "iterations": 0, "result_code": -1}
    return {
        "cost_before": float(analysis.cost_before),
        "cost_after": float(analysis.cost_after),
        "iterations": int(analysis.iterations),
        "result_code": int(vc.result_code(analysis.result)),
    }


_GATE_FIELDS = {
    "innovation_mean": "innovation_mean",
    "innovation_chi2_dof": "chi2_dof",
    "increment_max_sigma": "increment_max_sigma",
    "oracle_max_sigma": "oracle_max_sigma",
}


def _gate_fields(report: vc.GateReport | None, n_obs: int) -> dict:
    if report is None or n_obs == 0:
        return dict.fromkeys(_GATE_FIELDS, np.nan)
    return {k: float(getattr(report, v)) for k, v in _GATE_FIELDS.items()}


def cycle_fields(
    exp, obs: Observations, record: vc.CycleRecord, v: Verdict, timings: dict, whole=False
) -> dict[str, np.ndarray]:
    """The store variables of one cycle (states flat; `Experiment.fields` shapes them);
    `whole`: the cycle could assimilate its whole window (`vardax_core.Cycle.assimilate`)."""
    used = np.asarray(record.obs_mask, bool)
    n_obs = int(used.sum())
    # a failed cycle keeps its rejected analysis for inspection; nothing starts from it
    analysis = record.analysis.trajectory if v.status == "failed" else record.accepted
    data = {
        "background": record.background,
        "analysis": analysis,
        "obs_value": obs.values,
        "obs_error_std": obs.error_std,
        "obs_mask": used,
        "obs_qc": obs.flags(used, None if whole else exp.core.new_rows),
        "obs_source": obs.source[-256:],
        "obs_hash": obs.content_hash,
        "status_reason": v.reason[:256],
        "n_obs": n_obs,
        "gate_verdict": v.gate_code,
        **_gate_fields(record.gate, n_obs),
        **_analysis_fields(record.analysis, n_obs),
        **timings,
    }
    if obs.positions is not None:
        data |= obs.position_fields(exp)
    if np.shape(record.forecast)[0]:
        data["forecast"] = record.forecast
    if record.background_ensemble is not None:
        data |= _ensemble_fields(record, v, exp.shift)
    return data


def _ensemble_fields(record: vc.CycleRecord, v: Verdict, at: int) -> dict:
    """An ensemble's members and spreads `at` steps into the window, where the next cycle
    starts (the window end, unless windows overlap); a failed cycle keeps its rejected
    analysis ensemble, as it keeps the analysis."""
    members_b = np.asarray(record.background_ensemble)
    background = members_b[:, at]
    members = record.analysis.ensemble if v.status == "failed" else record.accepted_ensemble
    if members is None:  # forecast-only: the background ensemble is handed on
        members = record.accepted_ensemble
    analysis = np.asarray(members)[:, at]
    spread = lambda e: np.std(e, axis=0, ddof=1)  # noqa: E731
    data = {
        "background_ensemble": background,
        "analysis_ensemble": analysis,
        "background_spread": spread(background),
        "analysis_spread": spread(analysis),
        # at the window end, where the report sets it against the background's error
        "ensemble_spread": float(np.mean(spread(members_b[:, -1]))),
    }
    if record.forecast_spread is not None and np.size(record.forecast_spread):
        data["forecast_spread"] = np.asarray(record.forecast_spread)
    return data


def stack(records: list[dict]) -> dict[str, np.ndarray]:
    """Per-cycle store variables stacked along a leading cycle axis (one region write)."""
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
