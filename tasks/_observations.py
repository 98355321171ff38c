"""A cycle's observations (step 1): read from the configured source, laid out on the
window, statically quality-controlled; a late or missing file by the late policy."""

from dataclasses import dataclass

import numpy as np

import storage

from ._late import wait_for_file

PASS = storage.QC.index("pass")
MISSING = storage.QC.index("missing")
GROSS = storage.QC.index("gross_error")


@dataclass
class Observations:
    """A cycle's observations on the layout `(W+1, m)`: values, errors, the mask of what may
    be assimilated (static QC passed; row 0 — the cycle point, assimilated by the previous
    cycle — never), the static QC flags, and lineage; `reason`: why there is nothing to
    assimilate, when there is not."""

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

    def flags(self, assimilated) -> np.ndarray:
        """The QC flags: the static ones, and `gross_error` where the background check
        rejected an observation that passed them."""
        flags = self.qc.copy()
        flags[self.mask & ~np.asarray(assimilated, bool)] = GROSS
        return flags


def _checked(exp, raw: storage.WindowObservations) -> Observations:
    """Static QC (missing, non-finite, out of range) and the assimilation mask."""
    qc = exp.cfg.observations.qc
    flags = storage.quality_control(raw, valid_range=qc.valid_range or (-np.inf, np.inf))
    mask = flags == PASS
    mask[0] = False
    reason = "" if mask.any() else f"no observations in the window in {raw.source}"
    return Observations(
        raw.values, raw.error_std, mask, flags, raw.source, raw.content_hash, reason
    )


def _none(exp, source: str, reason: str) -> Observations:
    shape = (len(exp.layout.window_offsets_s), exp.layout.obs_size)
    nan, nothing = np.full(shape, np.nan), np.zeros(shape, bool)
    digest = storage.content_hash(nan, nan, nothing)
    return Observations(
        nan, nan.copy(), nothing, np.full(shape, MISSING, "int8"), source, digest, reason
    )


def _late(exp, cycle: storage.CyclePoint, reason: str, url: str) -> Observations:
    if exp.cfg.observations.late_policy == "fail":
        raise storage.ObservationError(
            f"{exp.name}, cycle {cycle}: {reason} (observations.late_policy: fail)"
        )
    return _none(exp, url, reason)


def read_observations(exp, cycles: list[storage.CyclePoint]) -> list[Observations]:
    """The observations of consecutive cycles (one read per distinct file)."""
    offsets, locations = exp.layout.window_offsets_s, exp.observing.locations
    if "{cycle_id}" not in exp.obs_url:
        if exp.cfg.observations.cutoff and len(cycles) == 1:
            if reason := wait_for_file(exp, exp.obs_url, cycles[0]):
                return [_late(exp, cycles[0], reason, exp.obs_url)]
        table = _table(exp, exp.obs_url)
        times = [c.time for c in cycles]
        raws = storage.select_windows(table, times, offsets, locations, source=exp.obs_url)
        return [_checked(exp, raw) for raw in raws]
    out = []
    for cycle in cycles:
        url = exp.obs_url_for(cycle)
        if reason := wait_for_file(exp, url, cycle):
            out.append(_late(exp, cycle, reason, url))
            continue
        raw = storage.select_window(_table(exp, url), cycle.time, offsets, locations, source=url)
        out.append(_checked(exp, raw))
    return out


def _table(exp, url: str):
    o = exp.cfg.observations
    try:
        return storage.cached_observation_table(
            url, format=o.format, storage_options=o.storage_options
        )
    except storage.ObservationError as err:
        if exp.cfg.observations.simulated and "not found" in str(err):
            raise storage.ObservationError(
                f"experiment {exp.name}: {err}. Its observations are synthetic: run "
                f"`vardax-cycle simulate {exp.config_path}` first"
            ) from None
        raise
