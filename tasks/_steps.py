"""The six steps of a cycle as Prefect tasks, and the block task of long backfills.

Each task takes the config path and the cycle id (plus the previous steps' in-memory
results, which never reach Prefect's API: results are not persisted) and is a thin
adapter: read through `storage`, compute with the experiment's `vardax_core` functions,
write through `storage`. The step order of one cycle:

1. `ingest_obs`          — read the window's observations, static QC (missing, non-finite,
                           out of range);
2. `forecast_background` — the previous cycle's analysis (from the store) forecast over the
                           window; a cold start for the first cycle;
3. `analyse`             — the background check (gross errors) and the configured method;
4. `gate`                — finite, χ²/dof, increment bound → committed / degraded / failed;
5. `forecast_product`    — step 6 of the architecture, the lead-time product from the
                           accepted analysis (the next background is the next cycle's step 2,
                           from the store);
6. `persist`             — one region write of the whole cycle, `status` last.

The product forecast runs before `persist` so that the cycle lands in one write whose
status is written last: a crash never leaves a committed cycle without its forecast.
"""

import time
from dataclasses import dataclass, field

import jax
import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import storage
import vardax_core as vc

from ._experiment import Experiment, experiment, observation_table, writer

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}
PASS = storage.QC.index("pass")
GROSS = storage.QC.index("gross_error")
GATE_FAILED, GATE_PASSED, GATE_NOT_RUN = (
    storage.GATE_VERDICT.index(v) for v in ("failed", "passed", "not_run")
)


class CycleHalted(RuntimeError):
    """The gate rejected a cycle's analysis under the `halt` policy."""


@dataclass
class Observations:
    """A cycle's observations on the layout `(W+1, m)`: values, errors, the mask of what may
    be assimilated (static QC passed; row 0 — the cycle point, assimilated by the previous
    cycle — never), the static QC flags, and lineage."""

    values: np.ndarray
    error_std: np.ndarray
    mask: np.ndarray
    qc: np.ndarray
    source: str
    content_hash: str
    reason: str = ""

    @property
    def n_obs(self) -> int:
        return int(self.mask.sum())


@dataclass
class Background:
    x_start: np.ndarray
    trajectory: np.ndarray
    source: str
    wall_s: float


@dataclass
class Analysed:
    analysis: vc.Analysis | None
    used_mask: np.ndarray
    wall_s: float


@dataclass
class Verdict:
    status: str
    reason: str
    accepted: np.ndarray
    gate_code: int
    report: dict = field(default_factory=dict)


def _logger():
    try:
        return get_run_logger()
    except Exception:  # called outside a run (tests of the adapters)
        import logging

        return logging.getLogger("vardax.tasks")


# --- 1. ingest ------------------------------------------------------------------------


def window_observations(exp: Experiment, raw: storage.WindowObservations) -> Observations:
    """Static QC and the assimilation mask of a window's observations."""
    qc_cfg = exp.cfg.observations.qc
    flags = storage.quality_control(
        raw, valid_range=qc_cfg.valid_range or (-np.inf, np.inf), gross_error_k=qc_cfg.gross_error_k
    )
    mask = flags == PASS
    mask[0] = False
    reason = "" if mask.any() else f"no observations in the window in {raw.source}"
    return Observations(
        raw.values, raw.error_std, mask, flags, raw.source, raw.content_hash, reason
    )


def _no_observations(exp: Experiment, source: str, reason: str) -> Observations:
    W1, m = len(exp.layout.window_offsets_s), exp.layout.obs_size
    nan = np.full((W1, m), np.nan)
    return Observations(
        nan,
        nan.copy(),
        np.zeros((W1, m), bool),
        np.full((W1, m), storage.QC.index("missing"), "int8"),
        source,
        storage.content_hash(nan, nan, np.zeros((W1, m), bool)),
        reason,
    )


def wait_for_file(exp: Experiment, url: str, point) -> str | None:
    """Waits for an observation file until the cycle's cut-off (window end + `cutoff`, wall
    clock; no waiting without one), polling; a file counts once its size is stable.
    **Returns** None when it is there, else why not."""
    import pandas as pd

    o = exp.cfg.observations
    options = o.storage_options or None
    deadline = None
    if o.cutoff:
        window_end = exp.point(point) + exp.axis.interval
        deadline = window_end + pd.Timedelta(o.cutoff)
    log = None
    while True:
        size = storage.file_size(url, options)
        if size is not None:
            if o.stable_seconds == 0:
                return None
            time.sleep(o.stable_seconds)
            if storage.file_size(url, options) == size:
                return None
            continue  # still being written
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        if deadline is None or now >= deadline:
            by = f" by the cut-off {storage.iso(deadline)}" if deadline is not None else ""
            return f"no observation file {url}{by}"
        if log is None:
            log = _logger()
            log.info("waiting for %s until %s", url, storage.iso(deadline))
        time.sleep(min(o.poll_seconds, max((deadline - now).total_seconds(), 0.01)))


def _late(exp: Experiment, point, reason: str, url: str) -> Observations:
    if exp.cfg.observations.late_policy == "fail":
        raise storage.ObservationError(
            f"{exp.name}, cycle {storage.cycle_id(exp.point(point))}: {reason} "
            "(observations.late_policy: fail)"
        )
    return _no_observations(exp, url, reason)


def read_observations(exp: Experiment, points) -> list[Observations]:
    """The observations of cycle points (one file read per distinct file)."""
    template = "{cycle_id}" in exp.obs_url
    if not template:
        if exp.cfg.observations.cutoff and len(points) == 1:
            reason = wait_for_file(exp, exp.obs_url, points[0])
            if reason:
                return [_late(exp, points[0], reason, exp.obs_url)]
        try:
            table = observation_table(exp, exp.obs_url)
        except storage.ObservationError as err:
            if exp.cfg.observations.source == "synthetic" and "not found" in str(err):
                raise storage.ObservationError(
                    f"experiment {exp.name}: {err}. Its observations are synthetic: run "
                    f"`vardax-cycle simulate {exp.config_path}` first"
                ) from None
            raise
        raws = storage.select_windows(
            table, points, exp.layout.window_offsets_s, exp.locations, source=exp.obs_url
        )
        return [window_observations(exp, r) for r in raws]
    out = []
    for p in points:
        url = exp.obs_url_for(p)
        reason = wait_for_file(exp, url, p)
        if reason:
            out.append(_late(exp, p, reason, url))
            continue
        table = observation_table(exp, url)
        raw = storage.select_window(
            table, p, exp.layout.window_offsets_s, exp.locations, source=url
        )
        out.append(window_observations(exp, raw))
    return out


@task(name="ingest-obs", task_run_name="ingest-obs/{cycle}", **_TASK)
def ingest_obs(config: str, cycle: str) -> Observations:
    """Step 1: the window's observations from the configured source, statically QC'd."""
    exp = experiment(config)
    obs = read_observations(exp, [exp.point(cycle)])[0]
    _logger().info(
        "%s: %d observations assimilable (%s)", cycle, obs.n_obs, obs.reason or obs.source
    )
    return obs


# --- 2. forecast (background) ---------------------------------------------------------


def start_state(exp: Experiment, store: storage.CycleStore, point, cold_start: bool):
    """The state a cycle starts from: the end of the previous cycle's (accepted) analysis;
    after cycles skipped by the catch-up policy, the last analysis forecast across them
    (`operations.after_skip: carry`) or a cold start (`cold`); a cold start for the first
    cycle (or with `cold_start`). **Returns** (state, source)."""
    index = exp.axis.index(point)
    if index == 0 or cold_start:
        return exp.cold_start(), "cold start"
    previous = exp.axis.point(index - 1)
    status = store.status_of(previous)
    if status in ("committed", "degraded"):
        state = np.reshape(store.read_cycle(previous)["analysis"][-1], -1)
        return state, f"analysis of {storage.cycle_id(previous)}"
    if status == "skipped":
        codes = store.statuses()[:index]
        whole = np.flatnonzero(
            np.isin(codes, [storage.STATUS.index(s) for s in ("committed", "degraded")])
        )
        if exp.cfg.operations.after_skip == "cold" or len(whole) == 0:
            return exp.cold_start(), "cold start after skipped cycles"
        last = int(whole[-1])
        gap = index - 1 - last
        state = np.reshape(store.read_cycle(exp.axis.point(last))["analysis"][-1], -1)
        carried = exp.forecast(state, gap * exp.window)[-1]
        return (
            carried,
            f"analysis of {storage.cycle_id(exp.axis.point(last))} carried over {gap} skipped cycles",
        )
    raise storage.CycleError(
        f"cycle {storage.cycle_id(point)} starts from the analysis of cycle "
        f"{storage.cycle_id(previous)}, which is {status} in {exp.store_url}: run from an "
        "earlier cycle (or start cold with --cold-start)"
    )


@task(name="forecast-background", task_run_name="forecast-background/{cycle}", **_TASK)
def forecast_background(config: str, cycle: str, cold_start: bool = False) -> Background:
    """Step 2: the background over the window."""
    exp = experiment(config)
    point = exp.point(cycle)
    x_start, source = start_state(exp, writer(exp), point, cold_start)
    t0 = time.perf_counter()
    trajectory = exp.forecast(x_start, exp.window)
    return Background(np.asarray(x_start), trajectory, source, time.perf_counter() - t0)


# --- 3. analyse -----------------------------------------------------------------------


@task(name="analyse", task_run_name="analyse/{cycle}", **_TASK)
def analyse(config: str, cycle: str, background: Background, obs: Observations) -> Analysed:
    """Step 3: the background check, then the configured method. A window without
    observations is forecast-only: no analysis."""
    exp = experiment(config)
    if obs.n_obs == 0:
        return Analysed(None, obs.mask, 0.0)
    t0 = time.perf_counter()
    analysis, used = exp.analyse(background.trajectory, obs.values, obs.mask)
    analysis = jax.block_until_ready(analysis)
    wall = time.perf_counter() - t0
    _logger().info(
        "%s: %s, cost %.4g → %.4g in %d iterations (result %s)",
        cycle,
        exp.cfg.method.name,
        float(analysis.cost_before),
        float(analysis.cost_after),
        int(analysis.iterations),
        result_name(analysis.result),
    )
    return Analysed(analysis, np.asarray(used), wall)


def result_name(result) -> str:
    """The name of an `AnalysisResult` (e.g. `successful`, `max_steps_reached`)."""
    names = list(vc.AnalysisResult._name_to_item)
    return names[int(np.asarray(result._value))]


# --- 4. gate --------------------------------------------------------------------------


def verdict_of(
    exp: Experiment, report: dict, n_obs: int, no_obs_reason: str = ""
) -> tuple[str, str, int]:
    """(status, reason, gate code) of one cycle from its gate report; a cycle with no
    observations assimilated is forecast-only (`no_obs_reason`: why, when known)."""
    if n_obs == 0:
        why = no_obs_reason or "no observations to assimilate"
        return "degraded", f"forecast-only: {why}", GATE_NOT_RUN
    if report["passed"]:
        return "committed", "", GATE_PASSED
    problems = []
    if not report["finite"]:
        problems.append("the analysis is not finite")
    lo, hi = exp.cfg.gates.chi2_dof
    if not lo <= report["chi2_dof"] <= hi:
        problems.append(f"innovation chi2/dof {report['chi2_dof']:.3g} outside [{lo}, {hi}]")
    if not report["increment_max_sigma"] <= exp.cfg.gates.increment_sigma:
        problems.append(
            f"increment {report['increment_max_sigma']:.3g} sigma_b above "
            f"{exp.cfg.gates.increment_sigma}"
        )
    oracle = exp.cfg.gates.oracle
    if oracle is not None and not report.get("oracle_fraction", 1.0) >= oracle.min_fraction:
        problems.append(
            f"{report['oracle_fraction']:.0%} of the analysis within {oracle.k} sigma of the "
            f"strong-4DVar oracle (needs {oracle.min_fraction:.0%}; worst "
            f"{report['oracle_max_sigma']:.3g} sigma)"
        )
    what = "; ".join(problems) or "the background is not finite"
    if exp.gate.oracle_fallback and report.get("oracle_finite", False):
        return (
            "degraded",
            f"gate: {what}; handed on the strong-4DVar oracle's analysis "
            "(gates.oracle.on_failure oracle)",
            GATE_FAILED,
        )
    if exp.cfg.gates.policy == "halt":
        return "failed", f"gate: {what} (policy halt)", GATE_FAILED
    return "degraded", f"gate: {what}; carried the background (policy fallback)", GATE_FAILED


def _pick(array, i=None):
    """One cycle's value of a (possibly batched over cycles) result field."""
    return np.asarray(array) if i is None else np.asarray(array)[i]


def _report_dict(report: vc.GateReport, i=None) -> dict:
    def pick(a):
        return _pick(a, i)

    return {
        "passed": bool(pick(report.passed)),
        "finite": bool(pick(report.finite)),
        "chi2_dof": float(pick(report.chi2_dof)),
        "innovation_mean": float(pick(report.innovation_mean)),
        "increment_max_sigma": float(pick(report.increment_max_sigma)),
        "n_obs": int(pick(report.n_obs)),
        "oracle_max_sigma": float(pick(report.oracle_max_sigma)),
        "oracle_fraction": float(pick(report.oracle_fraction)),
        "oracle_finite": report.oracle_trajectory is not None
        and bool(np.all(np.isfinite(pick(report.oracle_trajectory)))),
    }


@task(name="gate", task_run_name="gate/{cycle}", **_TASK)
def gate(
    config: str, cycle: str, background: Background, obs: Observations, analysed: Analysed
) -> Verdict:
    """Step 4: may the analysis be used? **Returns** the status, and the trajectory the
    cycle hands on (the analysis, or the background under `fallback`)."""
    exp = experiment(config)
    if analysed.analysis is None:
        status, reason, code = verdict_of(exp, {}, 0, obs.reason)
        _logger().warning("%s: %s", cycle, reason)
        return Verdict(status, reason, background.trajectory, code)
    report, accepted = exp.judge(
        background.trajectory, analysed.analysis, obs.values, analysed.used_mask
    )
    rep = _report_dict(report)
    status, reason, code = verdict_of(exp, rep, rep["n_obs"])
    log = _logger()
    if status == "committed":
        log.info("%s: gate passed (chi2/dof %.3g)", cycle, rep["chi2_dof"])
    else:
        log.warning("%s: %s", cycle, reason)
    if status == "failed":
        accepted = analysed.analysis.trajectory  # kept for inspection; nothing uses it
    return Verdict(status, reason, np.asarray(accepted), code, rep)


# --- 5. the product forecast (step 6 of the architecture) ------------------------------


@task(name="forecast-product", task_run_name="forecast-product/{cycle}", **_TASK)
def forecast_product(config: str, cycle: str, verdict: Verdict) -> np.ndarray:
    """The forecast at the configured lead steps from the end of the accepted trajectory."""
    return experiment(config).product(verdict.accepted[-1])


# --- 6. persist -----------------------------------------------------------------------


def qc_flags(obs: Observations, used_mask) -> np.ndarray:
    """Static QC flags plus `gross_error` where the background check rejected a passed one."""
    flags = obs.qc.copy()
    rejected = obs.mask & ~np.asarray(used_mask, bool)
    flags[rejected] = GROSS
    return flags


def cycle_record(
    obs: Observations,
    background: np.ndarray,
    trajectory: np.ndarray,
    product: np.ndarray,
    analysis: dict,
    verdict: Verdict,
    used_mask,
    timings: dict,
) -> dict:
    """The store variables of one cycle."""
    rep = verdict.report
    data = {
        "background": background,
        "analysis": trajectory,
        "obs_value": obs.values,
        "obs_error_std": obs.error_std,
        "obs_mask": np.asarray(used_mask, bool),
        "obs_qc": qc_flags(obs, used_mask),
        "obs_source": obs.source[-256:],
        "obs_hash": obs.content_hash,
        "status_reason": verdict.reason[:256],
        "innovation_mean": rep.get("innovation_mean", np.nan),
        "innovation_chi2_dof": rep.get("chi2_dof", np.nan),
        "increment_max_sigma": rep.get("increment_max_sigma", np.nan),
        "oracle_max_sigma": rep.get("oracle_max_sigma", np.nan),
        "n_obs": int(np.sum(used_mask)),
        "gate_verdict": verdict.gate_code,
        **analysis,
        **timings,
    }
    if product.shape[0]:
        data["forecast"] = product
    return data


def analysis_fields(analysis: vc.Analysis | None, i=None) -> dict:
    if analysis is None:
        return {"result_code": -1, "iterations": 0}

    def pick(a):
        return _pick(a, i)

    return {
        "cost_before": float(pick(analysis.cost_before)),
        "cost_after": float(pick(analysis.cost_after)),
        "iterations": int(pick(analysis.iterations)),
        "result_code": int(pick(analysis.result._value)),
    }


@task(name="persist", task_run_name="persist/{cycle}", **_TASK)
def persist(
    config: str,
    cycle: str,
    obs: Observations,
    background: Background,
    analysed: Analysed,
    verdict: Verdict,
    product: np.ndarray,
    started: float,
) -> str:
    """Step 5 of the flow (persist): one region write of the cycle, `status` last."""
    exp = experiment(config)
    timings = {
        "wall_time_forecast_s": background.wall_s,
        "wall_time_analysis_s": analysed.wall_s,
        "wall_time_cycle_s": time.perf_counter() - started,
    }
    data = cycle_record(
        obs,
        background.trajectory,
        verdict.accepted,
        product,
        analysis_fields(analysed.analysis),
        verdict,
        analysed.used_mask,
        timings,
    )
    writer(exp).write_cycle(exp.point(cycle), exp.fields(data), verdict.status)
    _logger().info("%s: %s %s", cycle, verdict.status, verdict.reason)
    cycle_artifacts(exp, cycle, data, verdict)
    return verdict.status


def artifact_key(exp: Experiment, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for the experiment."""
    import re

    return re.sub(r"[^a-z0-9-]+", "-", f"{exp.name}-{what}".lower()).strip("-")


def cycle_artifacts(exp: Experiment, cycle: str, data: dict, verdict: Verdict) -> None:
    """The cycle's diagnostics as a table artifact and its verdict as a markdown artifact,
    on its flow run in the Prefect UI (keyed by experiment, so the UI keeps their history)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    names = (
        "n_obs",
        "innovation_mean",
        "innovation_chi2_dof",
        "increment_max_sigma",
        "oracle_max_sigma",
        "cost_before",
        "cost_after",
        "iterations",
        "wall_time_forecast_s",
        "wall_time_analysis_s",
        "wall_time_cycle_s",
    )
    row = {"cycle": cycle, "status": verdict.status}
    for name in names:
        value = np.asarray(data.get(name, np.nan)).item()
        row[name] = round(value, 6) if isinstance(value, float) else value
    row["gate"] = storage.GATE_VERDICT[verdict.gate_code]
    try:
        create_table_artifact(
            [row],
            key=artifact_key(exp, "cycle-diagnostics"),
            description=f"{exp.name} {cycle}: diagnostics of the cycle",
        )
        mark = {"committed": "✅", "degraded": "⚠️", "failed": "❌"}.get(verdict.status, "")
        create_markdown_artifact(
            f"## {exp.name} {cycle}: {mark} {verdict.status}\n\n"
            + (f"**Reason:** {verdict.reason}\n\n" if verdict.reason else "")
            + f"Method `{exp.cfg.method.name}`, {row['n_obs']} observations assimilated, "
            f"innovation χ²/dof {row['innovation_chi2_dof']}, cost {row['cost_before']} → "
            f"{row['cost_after']} in {row['iterations']} iterations; store `{exp.store_url}`.",
            key=artifact_key(exp, "cycle-summary"),
            description=f"{exp.name} {cycle}: verdict",
        )
    except Exception as err:  # never fail a persisted cycle for its UI entry
        _logger().warning("%s: artifacts not created: %s", cycle, err)


# --- block mode -------------------------------------------------------------------------


def _padded_size(n: int, block: int) -> int:
    """The smallest power of two ≥ `n` (at least 16), or `n` itself beyond `block`."""
    if n > block:
        return n
    return max(16, 1 << (n - 1).bit_length())


@task(name="cycle-block", task_run_name="block/{first}+{n_cycles}", **_TASK)
def run_block(config: str, first: str, n_cycles: int, cold_start: bool = False) -> list[str]:
    """`n_cycles` consecutive cycles from `first` in one pure-JAX loop (`lax.scan`, the
    background check and the gate per cycle inside), persisted in one region write with a
    status per cycle. Under `halt`, the cycles after a failed one are not written and
    `CycleHalted` is raised. **Returns** the statuses written."""
    exp = experiment(config)
    store = writer(exp)
    t0 = time.perf_counter()
    first_point = exp.point(first)
    index = exp.axis.index(first_point)
    points = exp.axis.points(index, index + n_cycles)
    x_start, _ = start_state(exp, store, first_point, cold_start)
    obs = read_observations(exp, points)
    # one row per model step: the first window's row 0, then rows 1…W of every window
    values = np.concatenate([obs[0].values[:1]] + [o.values[1:] for o in obs])
    mask = np.concatenate([obs[0].mask[:1]] + [o.mask[1:] for o in obs])
    # a short block is padded to a compiled size (powers of two up to `block_size`) with
    # cycles without observations, so that the last block of a range does not recompile
    size = _padded_size(n_cycles, exp.cfg.store.block)
    pad = (size - n_cycles) * exp.window
    values = np.concatenate([values, np.zeros((pad, values.shape[1]))])
    mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), bool)])
    out, products = exp.run_block(x_start, values, mask, size)
    out = jax.block_until_ready(out)
    compute_s = time.perf_counter() - t0
    verdicts = []
    for c in range(n_cycles):
        rep = _report_dict(out.gate, c)
        status, reason, code = verdict_of(exp, rep, rep["n_obs"], obs[c].reason)
        verdicts.append(Verdict(status, reason, None, code, rep))
    halt_at = next((c for c, v in enumerate(verdicts) if v.status == "failed"), None)
    n_write = n_cycles if halt_at is None else halt_at + 1
    background = np.asarray(out.background)
    accepted = np.array(out.accepted)
    if halt_at is not None:
        accepted[halt_at] = np.asarray(out.analysis.trajectory[halt_at])
    used = np.asarray(out.obs_mask)
    products = np.asarray(products)
    per_cycle = compute_s / n_cycles
    records = []
    for c in range(n_write):
        v = verdicts[c]
        v.accepted = accepted[c]
        fields = analysis_fields(out.analysis, c) if obs[c].n_obs else analysis_fields(None)
        timings = {
            "wall_time_forecast_s": np.nan,
            "wall_time_analysis_s": np.nan,
            "wall_time_cycle_s": per_cycle,
        }
        records.append(
            cycle_record(
                obs[c], background[c], accepted[c], products[c], fields, v, used[c], timings
            )
        )
    data = {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
    statuses = [v.status for v in verdicts[:n_write]]
    store.write_cycles(first_point, exp.fields(data), statuses)
    counts = {s: statuses.count(s) for s in set(statuses)}
    _logger().info(
        "block %s+%d: %s in %.2f s",
        storage.cycle_id(first_point),
        n_write,
        counts,
        time.perf_counter() - t0,
    )
    if halt_at is not None:
        raise CycleHalted(
            f"{exp.name}: cycle {storage.cycle_id(points[halt_at])} failed the gate — "
            f"{verdicts[halt_at].reason}. The run stops here; cycles after it were not run."
        )
    return statuses
