"""The experiment config: frozen, strict pydantic models of one YAML file.

An unknown key, a bad value or an impossible combination is an error that names the key
(and, through `load_config`, the file).
"""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^P(?!$)(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# YAML has no tuples: a pair is written as a two-element list
Pair = Annotated[tuple[float, float], Field(strict=False)]


# --- forward models ---------------------------------------------------------------------


class _ModelBase(_Config):
    integrator: Literal["rk4", "diffrax"] = "rk4"
    substeps: Annotated[int, Field(ge=1)] = 1


class Lorenz63Config(_ModelBase):
    name: Literal["lorenz63"]
    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0
    dt: Annotated[float, Field(gt=0)] = 0.01

    @property
    def state_size(self) -> int:
        return 3


class Lorenz96Config(_ModelBase):
    name: Literal["lorenz96"]
    K: Annotated[int, Field(ge=4)] = 40
    F: float = 8.0
    dt: Annotated[float, Field(gt=0)] = 0.05

    @property
    def state_size(self) -> int:
        return self.K


class Lorenz96TwoLevelConfig(_ModelBase):
    name: Literal["lorenz96_two_level"]
    K: Annotated[int, Field(ge=4)] = 8
    J: Annotated[int, Field(ge=1)] = 8
    F: float = 20.0
    h: float = 1.0
    c: float = 10.0
    b: float = 10.0
    dt: Annotated[float, Field(gt=0)] = 0.005

    @property
    def state_size(self) -> int:
        return self.K * (1 + self.J)


class QGConfig(_ModelBase):
    """The doubly periodic quasi-geostrophic model (`vardax_core.QuasiGeostrophic`): the
    streamfunction on an `ny × nx` grid over `[0, 2π)²`."""

    name: Literal["qg"]
    ny: Annotated[int, Field(ge=8, multiple_of=2)] = 64
    nx: Annotated[int, Field(ge=8, multiple_of=2)] = 64
    kappa2: Annotated[float, Field(ge=0)] = 4.0
    beta: float = 0.5
    drag: Annotated[float, Field(ge=0)] = 0.05
    forcing: float = 1.0
    forcing_k: Annotated[int, Field(ge=1)] = 4
    damping: Annotated[float, Field(gt=0)] = 2.0
    dt: Annotated[float, Field(gt=0)] = 0.05

    @property
    def state_size(self) -> int:
        return self.ny * self.nx

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)


ModelConfig = Annotated[
    Lorenz63Config | Lorenz96Config | Lorenz96TwoLevelConfig | QGConfig,
    Field(discriminator="name"),
]


# --- observations -----------------------------------------------------------------------


class EveryConfig(_Config):
    """Every `every`-th state component from `offset`."""

    every: Annotated[int, Field(ge=1)]
    offset: Annotated[int, Field(ge=0)] = 0


class QCConfig(_Config):
    valid_range: Pair | None = None
    gross_error_k: Annotated[float, Field(gt=0)] = 5.0
    background_std: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _range(self):
        if self.valid_range is not None and not self.valid_range[0] < self.valid_range[1]:
            raise ValueError(
                f"valid_range must be (low, high) with low < high, got {self.valid_range}"
            )
        return self


class GriddedNetwork(_Config):
    """Grid points every `every` cells (in `y` and `x`) from `offset`."""

    kind: Literal["gridded"]
    every: Annotated[int, Field(ge=1)]
    offset: Annotated[int, Field(ge=0)] = 0


class StationNetwork(_Config):
    """`count` irregular stations, uniform over the domain (drawn with `seed`), observed by
    bilinear interpolation."""

    kind: Literal["stations"]
    count: Annotated[int, Field(ge=1)]
    seed: Annotated[int, Field(ge=0)] = 0


class SwathNetwork(_Config):
    """Along-track swaths (altimetry): `tracks` ground tracks at `angle` degrees, `width`
    points across, every `spacing` cells along; one track is seen per observation time."""

    kind: Literal["swath"]
    tracks: Annotated[int, Field(ge=1)]
    width: Annotated[int, Field(ge=1)] = 3
    spacing: Annotated[float, Field(gt=0)] = 1.0
    angle: Annotated[float, Field(gt=0, lt=180)] = 60.0


Network = Annotated[GriddedNetwork | StationNetwork | SwathNetwork, Field(discriminator="kind")]


class ObservationsConfig(_Config):
    """Where the observations come from and how they are laid out.

    A 1-D model observes state components (`locations`); a 2-D model observes points of its
    grid laid out by `network` (gridded, stations or swaths).

    `source: synthetic` makes an OSSE (`simulate` writes the nature run and the files
    under the run folder); `source: file` reads `url` (CSV, Parquet, Zarr or NetCDF).

    Late observations: with `cutoff` (a duration after the window end, wall clock), the
    ingest step waits for a cycle's file until then, polling every `poll_seconds`, and reads
    it once its size has not changed for `stable_seconds`; after the cut-off `late_policy`
    applies: `forecast_only` (the cycle is degraded, the reason recorded) or `fail`.
    """

    source: Literal["synthetic", "file"]
    url: str | None = None
    format: Literal["csv", "parquet", "zarr", "netcdf"] | None = None
    storage_options: dict[str, Any] = {}
    locations: Literal["all"] | EveryConfig | list[Annotated[int, Field(ge=0)]] = "all"
    network: Network | None = None
    operator: Literal["identity", "arctan"] = "identity"
    error_std: Annotated[float, Field(gt=0)] = 1.0
    every_steps: Annotated[int, Field(ge=1)] = 1
    qc: QCConfig = QCConfig()
    cutoff: str | None = None
    poll_seconds: Annotated[float, Field(gt=0)] = 2.0
    stable_seconds: Annotated[float, Field(ge=0)] = 1.0
    late_policy: Literal["forecast_only", "fail"] = "forecast_only"

    @field_validator("cutoff")
    @classmethod
    def _cutoff(cls, value):
        if value is not None and not _DURATION.match(value):
            raise ValueError(f"not an ISO 8601 duration: {value!r} (e.g. PT20M)")
        return value

    @model_validator(mode="after")
    def _source(self):
        if self.source == "file" and not self.url:
            raise ValueError("source 'file' needs url (a path or fsspec URL of the observations)")
        if isinstance(self.locations, list) and len(set(self.locations)) != len(self.locations):
            raise ValueError("locations has duplicates")
        return self

    def location_indices(self, state_size: int) -> list[int]:
        if self.locations == "all":
            return list(range(state_size))
        if isinstance(self.locations, EveryConfig):
            return list(range(self.locations.offset, state_size, self.locations.every))
        return list(self.locations)


# --- methods ----------------------------------------------------------------------------


class CovarianceConfig(_Config):
    """`scaled_identity` (variance), `diagonal` (variances), `periodic` (variance,
    length_scale, kernel), `climatological` (scale·C_clim + nugget·I from a free run) or
    `spectral` (variance, length_scale in grid cells: a Gaussian correlation on the qg
    grid or the lorenz96 ring, applied with FFTs, never as a matrix)."""

    kind: Literal["scaled_identity", "diagonal", "periodic", "climatological", "spectral"]
    variance: Annotated[float, Field(gt=0)] | None = None
    variances: list[Annotated[float, Field(gt=0)]] | None = None
    length_scale: Annotated[float, Field(gt=0)] | None = None
    kernel: Literal["gaussian", "matern32"] = "gaussian"
    scale: Annotated[float, Field(gt=0)] | None = None
    nugget: Annotated[float, Field(ge=0)] = 0.0
    climate_steps: Annotated[int, Field(ge=100)] = 20_000

    @model_validator(mode="after")
    def _fields_of_kind(self):
        needs = {
            "scaled_identity": ("variance",),
            "diagonal": ("variances",),
            "periodic": ("variance", "length_scale"),
            "climatological": ("scale",),
            "spectral": ("variance", "length_scale"),
        }[self.kind]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"kind '{self.kind}' needs {', '.join(missing)}")
        return self


LEARNED_METHODS = ("fourdvarnet", "amortized")


class NetworkConfig(_Config):
    """The architecture of a learned method. FourDVarNet: `prior` (`bilinear`, `conv`,
    `mlp`, `identity`; 2-D models: `bilinear`, `identity`), `latent_dim`, `hidden_dim`
    (ConvLSTM channels), `n_solver_steps`, `gradient_mode` (`unrolled`, `one_step`,
    `implicit`). Amortized: `context_dim`, `hidden_dim`, `depth` of the MLPs."""

    prior: Literal["bilinear", "conv", "mlp", "identity"] = "bilinear"
    latent_dim: Annotated[int, Field(ge=1)] = 16
    hidden_dim: Annotated[int, Field(ge=1)] = 32
    n_solver_steps: Annotated[int, Field(ge=2)] = 10
    gradient_mode: Literal["unrolled", "one_step", "implicit"] = "unrolled"
    context_dim: Annotated[int, Field(ge=1)] = 64
    depth: Annotated[int, Field(ge=1)] = 2
    seed: int = 0


class TrainingConfig(_Config):
    """Training of a learned method (`vardax-cycle train`): `n_train` simulated windows
    (truth, observations, background) from the experiment's model and observation layout,
    `steps` Adam steps on minibatches of `batch_size`, validation on `n_validation` other
    windows, the held-out check against the oracle on `n_heldout` more, and (amortized)
    simulation-based calibration on `n_sbc` more."""

    n_train: Annotated[int, Field(ge=1)] = 512
    n_validation: Annotated[int, Field(ge=1)] = 64
    n_heldout: Annotated[int, Field(ge=1)] = 32
    n_sbc: Annotated[int, Field(ge=10)] = 256
    steps: Annotated[int, Field(ge=1)] = 1000
    learning_rate: Annotated[float, Field(gt=0)] = 3e-3
    batch_size: Annotated[int, Field(ge=1)] = 64
    seed: int = 1000
    log_every: Annotated[int, Field(ge=1)] = 50
    end_weight: Annotated[float, Field(ge=0)] = 1.0
    """FourDVarNet: extra weight of the window's last state in the loss (the cycle hands it
    on to the next window)."""


class MethodConfig(_Config):
    name: Literal[
        "oi", "3dvar", "strong_4dvar", "weak_4dvar", "incremental_4dvar", *LEARNED_METHODS
    ]
    prior_cov: CovarianceConfig
    model_error_cov: CovarianceConfig | None = None
    minimiser: Literal["bfgs", "lbfgs", "nonlinear_cg", "levenberg_marquardt"] | None = None
    rtol: Annotated[float, Field(gt=0)] = 1e-6
    atol: Annotated[float, Field(gt=0)] = 1e-6
    max_steps: Annotated[int, Field(ge=1)] = 500
    n_outer: Annotated[int, Field(ge=1)] = 10
    n_inner: Annotated[int, Field(ge=1)] = 50
    network: NetworkConfig | None = None
    training: TrainingConfig | None = None
    checkpoint: str | None = None
    """Where `vardax-cycle train` writes the learned method's parameters (default
    `<method>.eqx` beside the store; its metadata in `<checkpoint>.json`)."""

    @property
    def learned(self) -> bool:
        return self.name in LEARNED_METHODS

    @model_validator(mode="after")
    def _combination(self):
        if self.learned:
            if self.minimiser is not None:
                raise ValueError(f"{self.name} is learned: it takes no minimiser")
            if self.network is None:
                object.__setattr__(self, "network", NetworkConfig())
            if self.training is None:
                object.__setattr__(self, "training", TrainingConfig())
        else:
            for key in ("network", "training", "checkpoint"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"method.{key} is for the learned methods {LEARNED_METHODS}, "
                        f"not {self.name}"
                    )
        if self.name == "weak_4dvar" and self.model_error_cov is None:
            raise ValueError("weak_4dvar needs model_error_cov (the model-error covariance Q)")
        if self.name != "weak_4dvar" and self.model_error_cov is not None:
            raise ValueError(f"model_error_cov is for weak_4dvar only, not {self.name}")
        if self.name == "oi" and self.minimiser is not None:
            raise ValueError("oi is closed-form: it takes no minimiser")
        if self.minimiser == "levenberg_marquardt" and self.name != "strong_4dvar":
            raise ValueError(
                f"levenberg_marquardt is a least-squares solver for strong_4dvar, not {self.name}"
            )
        return self


# --- cycling, store, gates --------------------------------------------------------------


def _check_time(value: str) -> str:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"not an ISO 8601 time: {value!r} (e.g. 2026-01-01T00:00Z)") from err
    return value


class CyclingConfig(_Config):
    """Cycle points `origin + k·interval`; one interval is `window_steps` model steps.

    `lead_steps`: model steps after the cycle point of the product forecast.
    `first_guess_std`: the first background is the truth plus this noise (OSSE) — or the
    climatological mean when the truth is unknown.
    """

    origin: str
    interval: str = "PT6H"
    window_steps: Annotated[int, Field(ge=1)]
    lead_steps: list[Annotated[int, Field(ge=0)]] = []
    first_guess_std: Annotated[float, Field(ge=0)] = 1.0
    spinup_steps: Annotated[int, Field(ge=0)] = 1000

    _origin = field_validator("origin")(_check_time)

    @field_validator("interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError(f"not an ISO 8601 duration: {value!r} (e.g. PT6H, P1D)")
        return value

    @field_validator("lead_steps")
    @classmethod
    def _sorted(cls, value: list[int]) -> list[int]:
        if value != sorted(set(value)):
            raise ValueError("lead_steps must be increasing")
        return value


class StoreConfig(_Config):
    """`block`: cycles per growth step of the store (and per chunk of its per-cycle
    scalars); `field_chunk`: cycles per chunk of its fields (1: one object per cycle; more
    makes long block-mode backfills fast, see bench/RESULTS.md), a divisor of `block`."""

    url: str
    storage_options: dict[str, Any] = {}
    block: Annotated[int, Field(ge=1)] = 256
    field_chunk: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _chunk_divides_block(self):
        if self.block % self.field_chunk:
            raise ValueError(f"field_chunk ({self.field_chunk}) must divide block ({self.block})")
        return self


class OracleConfig(_Config):
    """The oracle gate of a learned method: at least `min_fraction` of the analysed states
    at the window times `at` (`start`, `end`, `all`) lie within `k` standard deviations of
    strong 4DVar's Laplace posterior (its analysis and Gauss–Newton covariance). On failure
    `on_failure` says what the cycle hands on."""

    k: Annotated[float, Field(gt=0)] = 3.0
    min_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    at: Literal["start", "end", "all"] = "end"
    max_steps: Annotated[int, Field(ge=1)] = 200
    on_failure: Literal["oracle", "background"] = "oracle"
    """What a cycle hands on when the learned analysis fails the oracle gate: the oracle's
    analysis (the cycle is `degraded`, the classical method having taken over) or, as for
    any failed gate, the background under `gates.policy`."""


class GateConfig(_Config):
    """The gate of step 4: a finite analysis, innovation χ²/dof of the background within
    `chi2_dof`, every increment within `increment_sigma`·σ_b; for a learned method the
    oracle (`oracle`, on by default with its defaults); on failure `policy`."""

    oracle: OracleConfig | None = None
    chi2_dof: Pair = (0.05, 20.0)
    increment_sigma: Annotated[float, Field(gt=0)] = 10.0
    policy: Literal["fallback", "halt"] = "fallback"

    @model_validator(mode="after")
    def _bounds(self):
        lo, hi = self.chi2_dof
        if not 0 <= lo < hi:
            raise ValueError(
                f"chi2_dof must be (low, high) with 0 <= low < high, got {self.chi2_dof}"
            )
        return self


class OperationsConfig(_Config):
    """Unattended cycling (`vardax-cycle serve`): a scheduled run processes every cycle that
    is due (its window has ended) and not done. After an outage, `catch_up` says what to do
    with the missed cycles: `all` (run them in order), `latest` (mark all but the newest
    `skipped`), `max_lag` (mark those whose window ended more than `max_lag` ago `skipped`).
    A cycle after skipped ones starts from the last analysis forecast across the gap
    (`after_skip: carry`) or cold (`cold`). `cron` replaces the interval schedule."""

    catch_up: Literal["all", "latest", "max_lag"] = "all"
    max_lag: str | None = None
    after_skip: Literal["carry", "cold"] = "carry"
    cron: str | None = None

    @model_validator(mode="after")
    def _lag(self):
        if self.max_lag is not None and not _DURATION.match(self.max_lag):
            raise ValueError(f"max_lag: not an ISO 8601 duration: {self.max_lag!r}")
        if self.catch_up == "max_lag" and self.max_lag is None:
            raise ValueError("catch_up max_lag needs max_lag (an ISO 8601 duration, e.g. PT24H)")
        return self


class ExpectedConfig(_Config):
    """What the experiment states it reaches (checked by the tests)."""

    analysis_rmse: Annotated[float, Field(gt=0)] | None = None
    background_ratio: Annotated[float, Field(gt=0)] | None = None
    """The analysis RMSE is at most this fraction of the background's."""
    cycles: Annotated[int, Field(ge=1)] = 100
    spinup_cycles: Annotated[int, Field(ge=0)] = 20
    gate_pass: Annotated[float, Field(ge=0, le=1)] = 0.99
    """The fraction of cycles the experiment's own gate passes (a learned method's oracle
    gate rejects some)."""


class ExperimentConfig(_Config):
    experiment: str
    description: str = ""
    model: ModelConfig
    observations: ObservationsConfig
    method: MethodConfig
    cycling: CyclingConfig
    store: StoreConfig
    gates: GateConfig = GateConfig()
    operations: OperationsConfig = OperationsConfig()
    expected: ExpectedConfig = ExpectedConfig()

    @field_validator("experiment")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError(
                f"experiment must be a lowercase slug (letters, digits, - _ .), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _combination(self):
        n = self.model.state_size
        two_d = self.model.name == "qg"
        obs = self.observations
        if two_d and obs.network is None:
            raise ValueError(
                "observations.network is needed for the 2-D model qg (kind gridded, stations "
                "or swath)"
            )
        if not two_d and obs.network is not None:
            raise ValueError(
                f"observations.network is for a 2-D model; {self.model.name} observes "
                "observations.locations"
            )
        if two_d and (obs.locations != "all" or obs.operator != "identity"):
            raise ValueError(
                "observations.locations and observations.operator are for 1-D models; the qg "
                "model's observations are laid out by observations.network"
            )
        covariances = [self.method.prior_cov] + (
            [self.method.model_error_cov] if self.method.model_error_cov else []
        )
        for cov in covariances:
            if two_d and cov.kind not in ("spectral", "scaled_identity"):
                raise ValueError(
                    f"covariance kind {cov.kind} would form a {n} × {n} matrix for the qg "
                    "model: use spectral (or scaled_identity)"
                )
            if cov.kind == "spectral" and self.model.name not in ("qg", "lorenz96"):
                raise ValueError(
                    "covariance kind spectral is for a homogeneous periodic grid (qg, or the "
                    f"lorenz96 ring), not {self.model.name}"
                )
        if (
            two_d
            and self.method.name == "strong_4dvar"
            and self.method.minimiser
            in (
                None,
                "levenberg_marquardt",
            )
        ):
            raise ValueError(
                "strong_4dvar on the qg model needs a gradient minimiser (lbfgs, bfgs, "
                "nonlinear_cg): Levenberg-Marquardt forms the Jacobian; or use incremental_4dvar"
            )
        if self.method.learned and self.gates.oracle is None and not two_d:
            object.__setattr__(
                self, "gates", self.gates.model_copy(update={"oracle": OracleConfig()})
            )
        if two_d and self.gates.oracle is not None:
            raise ValueError(
                "gates.oracle forms the oracle's n × n posterior covariance: not for the qg "
                f"model ({n} state variables)"
            )
        if two_d and self.method.name == "amortized":
            raise ValueError(
                "method amortized predicts every state of the window with an MLP: for the "
                "Lorenz models; on the qg model use fourdvarnet"
            )
        if (
            two_d
            and self.method.learned
            and self.method.network.prior
            not in (
                "bilinear",
                "identity",
            )
        ):
            raise ValueError(
                f"method.network.prior {self.method.network.prior} is for 1-D states; a 2-D "
                "FourDVarNet takes bilinear or identity"
            )
        if two_d:
            return self._window_check()
        locations = self.observations.location_indices(n)
        bad = [i for i in locations if i >= n]
        if bad:
            raise ValueError(
                f"observations.locations {bad} are outside the {self.model.name} state of size {n}"
            )
        if not locations:
            raise ValueError("observations.locations selects no state component")
        if self.method.name == "oi" and self.observations.operator != "identity":
            raise ValueError(
                f"method.name oi needs a linear observation operator, but observations.operator "
                f"is {self.observations.operator}: use 3dvar or a 4dvar"
            )
        if self.method.prior_cov.kind == "diagonal" and len(self.method.prior_cov.variances) != n:
            raise ValueError(
                f"method.prior_cov.variances has {len(self.method.prior_cov.variances)} entries, "
                f"the state has {n}"
            )
        return self._window_check()

    def _window_check(self):
        if self.cycling.window_steps % self.observations.every_steps:
            raise ValueError(
                f"cycling.window_steps ({self.cycling.window_steps}) must be a multiple of "
                f"observations.every_steps ({self.observations.every_steps})"
            )
        return self


# --- sweeps on a Dask cluster -----------------------------------------------------------


class DaskConfig(_Config):
    """Where a sweep's or an ensemble's tasks run: the `address` of a running
    `dask.distributed` scheduler (`tcp://host:8786`), or, without one, a LocalCluster of
    `n_workers` processes with `threads_per_worker` threads."""

    address: str | None = None
    n_workers: Annotated[int, Field(ge=1)] = 2
    threads_per_worker: Annotated[int, Field(ge=1)] = 1


_SWEEPABLE = {"method", "gates", "description"}


class SweepConfig(_Config):
    """Several experiments over the same observations, run in parallel on Dask.

    Each member is the `base` experiment with `changes` to its `method` (and `gates`,
    `description`): the model, observations and cycling are shared, and so is the OSSE,
    written once into `folder` beside every member's store (`folder/<member>.zarr`).
    """

    sweep: str
    base: str
    folder: str
    cycles: Annotated[int, Field(ge=1)]
    block: Annotated[int, Field(ge=1)] = 64
    seed: int = 0
    members: dict[str, dict[str, Any]]
    dask: DaskConfig = DaskConfig()

    @field_validator("sweep")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError(
                f"sweep must be a lowercase slug (letters, digits, - _ .), got {value!r}"
            )
        return value

    @field_validator("members")
    @classmethod
    def _members(cls, value: dict) -> dict:
        if not value:
            raise ValueError("a sweep needs at least one member")
        for name, changes in value.items():
            if not _SLUG.match(name):
                raise ValueError(f"member name {name!r} is not a lowercase slug")
            other = sorted(set(changes) - _SWEEPABLE)
            if other:
                raise ValueError(
                    f"member {name} changes {other}: members share the base's model, "
                    f"observations and cycling (they may change {sorted(_SWEEPABLE)})"
                )
        return value
