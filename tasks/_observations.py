"""A cycle's observations (step 1): read from the configured source, laid out on the
window, statically quality-controlled; a late or missing file by the late policy."""

from dataclasses import dataclass

import numpy as np

import storage
import vardax_core as vc

from ._late import wait_for_file

PASS = storage.QC.index("pass")
MISSING = storage.QC.index("missing")
GROSS = storage.QC.index("gross_error")


@dataclass
class Observations:
    """A cycle's observations on the layout `(W+1, m)`: values, each one's error, the mask
    of what may be assimilated (static QC passed; row 0 — the cycle point, assimilated by
    the previous cycle — never), the static QC flags, and lineage; `reason`: why there is
    nothing to assimilate, when there is not; `positions` `(W+1, m, d)` for observations
    that carry their positions (model coordinates)."""

    values: np.ndarray
    error_std: np.ndarray
    mask: np.ndarray
    qc: np.ndarray
    source: str
    content_hash: str
    reason: str = ""
    positions: np.ndarray | None = None

    def window(self, exp, mask=None) -> vc.ObsWindow:
        """The `vardax_core.ObsWindow` of these observations (or of those in `mask`)."""
        mask = self.mask if mask is None else mask
        return obs_window(exp, self.values, mask, self.error_std, self.positions)

    def position_fields(self, exp) -> dict[str, np.ndarray]:
        """The store's `obs_<dim>` of observations at positions (none otherwise)."""
        dims = exp.observing.position_dims
        return {f"obs_{d}": self.positions[..., k] for k, d in enumerate(dims)}

    @property
    def n_obs(self) -> int:
        return int(self.mask.sum())

    def flags(self, assimilated, new_rows: int | None = None) -> np.ndarray:
        """The QC flags: the static ones, and `gross_error` where the background check
        rejected an observation that passed them — in the window's last `new_rows` rows
        when the method takes only those (a sliding window: the earlier rows' observations
        were assimilated by earlier cycles, and keep their static flag)."""
        flags = self.qc.copy()
        candidates = self.mask.copy()
        if new_rows is not None:
            candidates[: len(candidates) - new_rows] = False
        flags[candidates & ~np.asarray(assimilated, bool)] = GROSS
        return flags


def obs_window(exp, values, mask, error_std, positions=None) -> vc.ObsWindow:
    """A window's `vardax_core.ObsWindow`: `R` from each observation's error, and for
    observations at positions their interpolation operators on the model's grid."""
    operator = None if positions is None else exp.observing.grid.operator(positions)
    return vc.ObsWindow(values, np.asarray(mask, bool), error_std, operator)


def _checked(exp, raw: storage.WindowObservations) -> Observations:
    """Static QC (missing, non-finite, out of range) and the assimilation mask."""
    qc = exp.cfg.observations.qc
    inside = None if raw.positions is None else exp.observing.grid.inside(raw.positions)
    valid_range = qc.valid_range or (-np.inf, np.inf)
    flags = storage.quality_control(raw, valid_range=valid_range, inside=inside)
    mask = flags == PASS
    mask[0] = False
    reason = "" if mask.any() else _nothing_passes(raw, flags)
    return Observations(
        raw.values,
        raw.error_std,
        mask,
        flags,
        raw.source,
        raw.content_hash,
        reason,
        raw.positions,
    )


def _nothing_passes(raw: storage.WindowObservations, flags: np.ndarray) -> str:
    """Why a window has nothing to assimilate: no observations in it, or every one of them
    rejected by static QC — how many for each reason, and the first one's value and error."""
    present = raw.mask.copy()
    present[0] = False  # the cycle point's row is the previous cycle's
    if not present.any():
        return f"no observations in the window in {raw.source}"
    counts = {
        storage.QC[f]: int(n)
        for f, n in zip(*np.unique(flags[present], return_counts=True), strict=True)
    }
    t, k = np.argwhere(present & (flags != PASS))[0]
    return (
        f"none of the window's {int(present.sum())} observations in {raw.source} passes "
        f"static QC ({', '.join(f'{name} {n}' for name, n in counts.items())}; e.g. window "
        f"time {t}, slot {k}: value {float(raw.values[t, k])}, error_std {float(raw.error_std[t, k])})"
    )


def _none(exp, source: str, reason: str) -> Observations:
    shape = (len(exp.layout.window_offsets_s), exp.layout.obs_size)
    nan, nothing = np.full(shape, np.nan), np.zeros(shape, bool)
    digest = storage.content_hash(nan, nan, nothing)
    dims = exp.observing.position_dims
    positions = np.full((*shape, len(dims)), np.nan) if dims else None
    flags = np.full(shape, MISSING, "int8")
    return Observations(nan, nan.copy(), nothing, flags, source, digest, reason, positions)


def _late(exp, cycle: storage.CyclePoint, reason: str, url: str) -> Observations:
    if exp.cfg.observations.late_policy == "fail":
        raise storage.ObservationError(
            f"{exp.name}, cycle {cycle}: {reason} (observations.late_policy: fail)"
        )
    return _none(exp, url, reason)


def read_observations(exp, cycles: list[storage.CyclePoint]) -> list[Observations]:
    """The observations of consecutive cycles (one read per distinct file)."""
    if "{cycle_id}" not in exp.obs_url:
        if exp.cfg.observations.cutoff and len(cycles) == 1:
            if reason := wait_for_file(exp, exp.obs_url, cycles[0]):
                return [_late(exp, cycles[0], reason, exp.obs_url)]
        raws = _select(exp, _table(exp, exp.obs_url), cycles, exp.obs_url)
        return [_checked(exp, raw) for raw in raws]
    out = []
    for cycle in cycles:
        url = exp.obs_url_for(cycle)
        if reason := wait_for_file(exp, url, cycle):
            out.append(_late(exp, cycle, reason, url))
            continue
        out.append(_checked(exp, _select(exp, _table(exp, url), [cycle], url)[0]))
    return out


def _select(exp, table, cycles: list[storage.CyclePoint], url: str):
    """The windows of `cycles` in `table`: on the layout's locations, or by position."""
    offsets, times = exp.layout.window_offsets_s, [c.time for c in cycles]
    if exp.observing.position_dims:
        dims, capacity = exp.observing.position_dims, exp.cfg.observations.capacity
        return storage.select_positioned_windows(table, times, offsets, dims, capacity, source=url)
    return storage.select_windows(table, times, offsets, exp.observing.locations, source=url)


def _table(exp, url: str):
    o = exp.cfg.observations
    try:
        return storage.cached_observation_table(
            url,
            format=o.format,
            storage_options=exp.obs_storage_options,
            positions=exp.observing.position_dims,
            default_error_std=o.error_std,
        )
    except storage.ObservationError as err:
        if exp.cfg.observations.simulated and "not found" in str(err):
            raise storage.ObservationError(
                f"experiment {exp.name}: {err}. Its observations are synthetic: run "
                f"`vardax-cycle simulate {exp.config_path}` first"
            ) from None
        raise


def check_lineage(run, first: int) -> None:
    """Raises `storage.ObservationError` (exit code 2) when a run that continues from the
    done cycle before slot `first` would read other observations for that cycle than the
    store recorded it was computed from (`obs_hash`): the observation source was replaced
    (a new OSSE, an edited file), and the cycles to come would not follow from their past.
    Nothing to compare (no such cycle, no hash, its observations now missing): no check."""
    exp, store = run.exp, run.store
    if first == 0 or store.status_of(exp.axis.point(first - 1)) not in ("committed", "degraded"):
        return
    previous = exp.axis.cycle(first - 1)
    recorded = str(store.read_cycle(previous.time)["obs_hash"])
    try:
        now = read_observations(exp, [previous])[0]
    except storage.ObservationError:  # its file removed since (an operational clean-up)
        return
    if not recorded or now.reason or now.content_hash == recorded:
        return
    raise storage.ObservationError(
        f"{exp.name}: cycle {previous} was computed from other observations than {now.source} "
        f"holds now (obs_hash {recorded[:12]}… in {exp.store_url}, {now.content_hash[:12]}… "
        "now): the observation source was replaced since. Point observations.url at the "
        f"original, or recompute from the first changed cycle with `vardax-cycle backfill "
        f"{exp.config_path} --start CYCLE --end {previous.id} --rerun`"
    )
