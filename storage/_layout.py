"""What a store holds per cycle: the state and observation shapes of one experiment."""

import json
from dataclasses import asdict, dataclass, field

import numpy as np

STATUS = ("empty", "committed", "degraded", "failed", "skipped")
"""Cycle states, stored as CF flags: `flag_values` 0…4 with these `flag_meanings`."""
EMPTY, COMMITTED, DEGRADED, FAILED, SKIPPED = range(5)
DONE = (COMMITTED, DEGRADED, SKIPPED)
"""States a run does not redo: the cycle's slot is whole (a degraded cycle carries its
background; a skipped one was skipped by policy). `failed` and `empty` are redone."""

QC = ("pass", "missing", "nonfinite", "out_of_range", "gross_error", "flagged", "outside_domain")
"""Observation QC flags (`obs_qc`), CF flags 0…6 (new flags are appended). Only `pass` is
assimilated."""

GATE_VERDICT = ("failed", "passed", "not_run")
"""`gate_verdict` codes 0…2 (`not_run`: a forecast-only cycle, no observations)."""

DIAGNOSTICS = {
    "innovation_mean": "float64",
    "innovation_chi2_dof": "float64",
    "increment_max_sigma": "float64",
    "oracle_max_sigma": "float64",
    "cost_before": "float64",
    "cost_after": "float64",
    "iterations": "int32",
    "result_code": "int16",
    "gate_verdict": "int8",
    "n_obs": "int32",
    "wall_time_forecast_s": "float64",
    "wall_time_analysis_s": "float64",
    "wall_time_cycle_s": "float64",
}
"""Per-cycle scalar diagnostics and their dtypes."""


ENSEMBLE_STATES = ("background_ensemble", "analysis_ensemble")
"""An ensemble method's members at the window end (where the next cycle starts from;
`shift_steps` into the window when windows overlap), per cycle."""
ENSEMBLE_SPREADS = ("background_spread", "analysis_spread")
"""Their standard deviation over members, per state variable."""


@dataclass(frozen=True)
class StoreLayout:
    """Shapes and dtypes of one experiment's cycle store.

    **Arguments:**
    - `state_dims`: names and sizes of the state dimensions, e.g. `(("site", 40),)` or
      `(("y", 64), ("x", 64))`.
    - `window_offsets_s`: seconds from the cycle point of each background/analysis time.
    - `lead_offsets_s`: seconds of each forecast lead time after the window end (the
      analysis time the product forecast starts from).
    - `obs_size`: observations per window time.
    - `dtype`: dtype of states and observation values.
    - `obs_points`: for a 2-D state, the `(y, x)` grid position of each observation slot
      (stored as the `obs_y`, `obs_x` coordinates of `obs`).
    - `state_coords`: the coordinate values of each state dimension (`None`: grid indices).
    - `obs_position_dims`: for observations that carry their positions, the model
      dimensions they are given in: each cycle stores `obs_<dim>` `(window_time, obs)`.
    - `members`: the ensemble size of an ensemble method (0: none). Each cycle then stores
      `background_ensemble` and `analysis_ensemble` `(member, …state)` at the window end,
      their spread (`background_spread`, `analysis_spread`, the standard deviation over
      members) and the mean spread of the product forecast by lead time
      (`forecast_spread`); `background` and `analysis` are the ensemble means.
    """

    state_dims: tuple[tuple[str, int], ...]
    window_offsets_s: tuple[int, ...]
    lead_offsets_s: tuple[int, ...]
    obs_size: int
    dtype: str = "float64"
    obs_points: tuple[tuple[float, float], ...] | None = None
    obs_position_dims: tuple[str, ...] = ()
    state_coords: tuple[tuple[float, ...], ...] | None = None
    members: int = 0
    diagnostics: tuple[tuple[str, str], ...] = field(
        default=tuple(DIAGNOSTICS.items()), compare=True
    )

    def __post_init__(self):
        object.__setattr__(self, "state_dims", tuple((str(n), int(s)) for n, s in self.state_dims))
        object.__setattr__(self, "window_offsets_s", tuple(int(t) for t in self.window_offsets_s))
        object.__setattr__(self, "lead_offsets_s", tuple(int(t) for t in self.lead_offsets_s))
        object.__setattr__(
            self, "diagnostics", tuple((str(n), str(d)) for n, d in self.diagnostics)
        )
        object.__setattr__(self, "obs_position_dims", tuple(map(str, self.obs_position_dims)))
        if self.state_coords is not None:
            coords = tuple(tuple(float(v) for v in c) for c in self.state_coords)
            object.__setattr__(self, "state_coords", coords)
            if [len(c) for c in coords] != [s for _, s in self.state_dims]:
                raise ValueError("StoreLayout: state_coords do not match state_dims")
        if self.obs_points is not None:
            points = tuple((float(y), float(x)) for y, x in self.obs_points)
            object.__setattr__(self, "obs_points", points)
            if len(points) != self.obs_size:
                raise ValueError(
                    f"StoreLayout: {len(points)} obs_points for obs_size {self.obs_size}"
                )
        if not self.state_dims or any(s < 1 for _, s in self.state_dims):
            raise ValueError(
                f"StoreLayout: state_dims must be non-empty and positive, got {self.state_dims}"
            )
        if not self.window_offsets_s:
            raise ValueError("StoreLayout: window_offsets_s is empty")
        if self.obs_size < 1:
            raise ValueError(f"StoreLayout: obs_size must be >= 1, got {self.obs_size}")
        np.dtype(self.dtype)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(s for _, s in self.state_dims)

    @property
    def state_dim_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.state_dims)

    def variables(self) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], str]]:
        """`name → (dims after cycle, shape after cycle, dtype)` of every per-cycle variable."""
        W, L, m = len(self.window_offsets_s), len(self.lead_offsets_s), self.obs_size
        sd, ss = self.state_dim_names, self.state_shape
        out = {
            "background": (("window_time", *sd), (W, *ss), self.dtype),
            "analysis": (("window_time", *sd), (W, *ss), self.dtype),
            "obs_value": (("window_time", "obs"), (W, m), self.dtype),
            "obs_error_std": (("window_time", "obs"), (W, m), self.dtype),
            "obs_mask": (("window_time", "obs"), (W, m), "bool"),
            "obs_qc": (("window_time", "obs"), (W, m), "int8"),
            "obs_source": ((), (), "<U256"),
            "obs_hash": ((), (), "<U64"),
            "status_reason": ((), (), "<U256"),
        }
        for d in self.obs_position_dims:
            out[f"obs_{d}"] = (("window_time", "obs"), (W, m), "float64")
        if L:
            out["forecast"] = (("lead_time", *sd), (L, *ss), self.dtype)
        if self.members:
            N = self.members
            for name in ENSEMBLE_STATES:
                out[name] = (("member", *sd), (N, *ss), self.dtype)
            for name in ENSEMBLE_SPREADS:
                out[name] = (sd, ss, self.dtype)
            if L:
                out["forecast_spread"] = (("lead_time",), (L,), "float64")
            out["ensemble_spread"] = ((), (), "float64")
        out |= {name: ((), (), dtype) for name, dtype in self.diagnostics}
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StoreLayout":
        return cls(**json.loads(text))  # __post_init__ turns JSON lists back into tuples

    def differences(self, other: "StoreLayout") -> list[str]:
        """Human-readable differences `store has X, expected Y`."""
        a, b = asdict(self), asdict(other)
        return [f"{k}: store has {a[k]!r}, expected {b[k]!r}" for k in a if a[k] != b[k]]
