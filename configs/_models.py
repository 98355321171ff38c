"""The experiment config: frozen, strict pydantic models of one YAML file.

An unknown key, a bad value or an impossible combination is an error that names the key
(and, through `load_config`, the file).
"""

import re
import typing
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^P(?!$)(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# YAML has no tuples: a pair is written as a two-element list
Pair = Annotated[tuple[float, float], Field(strict=False)]


# --- forward models ---------------------------------------------------------------------


class _Named(_Config):
    @property
    def label(self) -> str:
        """What the config names, in a word: its `name`, or a plugin target's attribute."""
        name = getattr(self, "name", None)
        return name or str(getattr(self, "target", "")).rpartition(":")[2]


class _ModelBase(_Named):
    integrator: Literal["rk4", "diffrax"] = "rk4"
    substeps: Annotated[int, Field(ge=1)] = 1


class Lorenz63Config(_ModelBase):
    """Lorenz (1963), `vardax_core.Lorenz63`."""

    name: Literal["lorenz63"]
    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0
    dt: Annotated[float, Field(gt=0)] = 0.01


class Lorenz96Config(_ModelBase):
    """Lorenz (1996) on a ring of `K` sites, `vardax_core.Lorenz96`."""

    name: Literal["lorenz96"]
    K: Annotated[int, Field(ge=4)] = 40
    F: float = 8.0
    dt: Annotated[float, Field(gt=0)] = 0.05


class Lorenz96TwoLevelConfig(_ModelBase):
    """Two-level Lorenz-96 (`K` slow, `K·J` fast variables), `vardax_core.Lorenz96TwoLevel`."""

    name: Literal["lorenz96_two_level"]
    K: Annotated[int, Field(ge=4)] = 8
    J: Annotated[int, Field(ge=1)] = 8
    F: float = 20.0
    h: float = 1.0
    c: float = 10.0
    b: float = 10.0
    dt: Annotated[float, Field(gt=0)] = 0.005


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


# --- plugins: a model, operator or method of one's own ---------------------------------

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

ENTRY_POINT_GROUPS = {
    "model": "vardax_cycle.models",
    "operator": "vardax_cycle.operators",
    "method": "vardax_cycle.methods",
}
"""The entry-point group under which installed packages register each kind of plugin."""


def installed_plugins(kind: str) -> list[str]:
    """The names installed packages register for `kind` (`model`, `operator`, `method`)."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUPS[kind]))


class _Plugin(_Named):
    """A plugin by import path (`target: "package.module:attribute"`, a class or factory)
    or by the `name` an installed package registers (its entry point); `params` are the
    keyword arguments it is called with."""

    _kind: ClassVar[str]
    _builtins: ClassVar[tuple[str, ...]] = ()
    name: str | None = None
    target: str | None = None
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_reference(self):
        if (self.name is None) == (self.target is None):
            raise ValueError(
                f'a {self._kind} of one\'s own needs either target ("module:attribute") or '
                "the name of an installed plugin, not both"
            )
        if self.target is not None and not _TARGET.match(self.target):
            raise ValueError(f'target must be "package.module:attribute", got {self.target!r}')
        if self.name in self._builtins and self._kind == "operator":
            raise ValueError(
                f"the built-in operator {self.name} is named as a string: operator: {self.name}"
            )
        if self.name is not None and self.name not in installed_plugins(self._kind):
            known = ", ".join(repr(n) for n in self._builtins)
            group = ENTRY_POINT_GROUPS[self._kind]
            plugins = installed_plugins(self._kind)
            raise ValueError(
                f"Input should be {known} or an installed plugin (entry-point group {group}: "
                f"{', '.join(plugins) or 'none installed'}), got {self.name!r}"
            )
        return self

    @property
    def reference(self) -> str:
        """What it names, for messages: its target or its entry-point name."""
        return self.target or f"{self.name} (entry point {ENTRY_POINT_GROUPS[self._kind]})"


class PluginModelConfig(_ModelBase, _Plugin):
    """A forward model of one's own. The target, called with `params`, returns a
    `vardax_core.AbstractForwardModel` — or a plain JAX vector field `f(x) -> dx/dt`, which
    is integrated with `integrator` (`substeps`) at time step `dt` on a state of
    `state_size` (both then required); `dims` names its dimension for the store and
    `periodic` says it is a homogeneous ring (for `spectral` B and positions that wrap)."""

    _kind: ClassVar[str] = "model"
    dt: Annotated[float, Field(gt=0)] | None = None
    state_size: Annotated[int, Field(ge=1)] | None = None
    dims: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")] | None = None
    periodic: bool | None = None


def _tag(builtins: tuple[str, ...], kind: str):
    """The union member of a built-in `name`, else the plugin (a `target`, or the `name` of
    an installed plugin); another name is no member (the error lists what there is)."""

    def tag(value):
        get = value.get if isinstance(value, dict) else lambda k: getattr(value, k, None)
        name = get("name")
        if get("target") is None and name in builtins:
            return name
        if get("target") is not None or name is None or name in installed_plugins(kind):
            return "plugin"
        return str(name)

    return tag


def _names(*classes) -> tuple[str, ...]:
    return tuple(c.model_fields["name"].annotation.__args__[0] for c in classes)


def _by_name(*classes, plugin):
    names = _names(*classes)
    plugin._builtins = names
    members = [Annotated[c, Tag(n)] for c, n in zip(classes, names, strict=True)]
    members.append(Annotated[plugin, Tag("plugin")])
    union = typing.Union[tuple(members)]  # noqa: UP007
    return Annotated[union, Discriminator(_tag(names, plugin._kind))]


ModelConfig = _by_name(
    Lorenz63Config, Lorenz96Config, Lorenz96TwoLevelConfig, QGConfig, plugin=PluginModelConfig
)


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


class PluginOperatorConfig(_Plugin):
    """An observation operator of one's own. The target is called with `params` and, of
    `locations` (the observed state components, `observations.locations`) and
    `state_size`, those its signature names; it returns a
    `vardax_core.AbstractObsOperator` or a plain function `h(x) -> y` of the state (`linear:
    true` declares such a function linear, for OI)."""

    _kind: ClassVar[str] = "operator"
    _builtins: ClassVar[tuple[str, ...]] = ("identity", "arctan")
    linear: bool = False


class ObservationsConfig(_Config):
    """Where the observations come from and how they are laid out.

    A model with a vector state observes state components (`locations`, through the
    `operator` `identity`, `arctan` or one's own); a model with a 2-D field observes points
    of its grid laid out by `network` (gridded, stations or swaths). With `capacity`, each
    observation carries its position instead, in columns named after the model's
    dimensions (`site` on the Lorenz-96 ring, `y` and `x` on the QG grid, in the model's
    coordinates): it is observed by linear (1-D) or bilinear (2-D) interpolation, and at
    most `capacity` observations are valid at any one window time.

    Each observation's own `error_std` (a column of the file) makes `R` diagonal;
    `error_std` here is the default for a file without that column (and the error of an
    OSSE's observations).

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
    operator: Literal["identity", "arctan"] | PluginOperatorConfig = "identity"
    capacity: Annotated[int, Field(ge=1)] | None = None
    error_std: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
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
        if not self.simulated and not self.url:
            raise ValueError("source 'file' needs url (a path or fsspec URL of the observations)")
        if isinstance(self.locations, list) and len(set(self.locations)) != len(self.locations):
            raise ValueError("locations has duplicates")
        if self.capacity is not None:
            if self.simulated:
                raise ValueError(
                    "capacity is for observation files whose rows carry their positions; "
                    "a synthetic source observes locations or a network"
                )
            if self.locations != "all" or self.network is not None or self.operator != "identity":
                raise ValueError(
                    "with capacity the observations carry their positions (and are observed "
                    "by interpolation): leave out locations, network and operator"
                )
        return self

    @property
    def simulated(self) -> bool:
        """The observations are an OSSE's (`simulate` writes them and the nature run)."""
        return self.source == "synthetic"

    def location_indices(self, state_size: int) -> list[int]:
        if self.locations == "all":
            return list(range(state_size))
        if isinstance(self.locations, EveryConfig):
            return list(range(self.locations.offset, state_size, self.locations.every))
        return list(self.locations)


# --- covariances ------------------------------------------------------------------------


class ScaledIdentityCov(_Config):
    """`variance · I`."""

    kind: Literal["scaled_identity"]
    variance: Annotated[float, Field(gt=0)]


class DiagonalCov(_Config):
    """`diag(variances)`, one variance per state component."""

    kind: Literal["diagonal"]
    variances: list[Annotated[float, Field(gt=0)]]


class PeriodicCov(_Config):
    """A stationary correlation on a ring (Gaussian or Matérn-3/2, `length_scale` in sites)
    times `variance`, as a matrix."""

    kind: Literal["periodic"]
    variance: Annotated[float, Field(gt=0)]
    length_scale: Annotated[float, Field(gt=0)]
    kernel: Literal["gaussian", "matern32"] = "gaussian"


class ClimatologicalCov(_Config):
    """`scale · C_clim + nugget · I`, `C_clim` the sample covariance of a free run of
    `climate_steps` (computed once and cached beside the store)."""

    kind: Literal["climatological"]
    scale: Annotated[float, Field(gt=0)]
    nugget: Annotated[float, Field(ge=0)] = 0.0
    climate_steps: Annotated[int, Field(ge=100)] = 20_000


class SpectralCov(_Config):
    """A Gaussian correlation of `length_scale` grid cells times `variance` on a model's
    homogeneous periodic grid (the qg field, the lorenz96 ring), applied with FFTs, never
    as a matrix."""

    kind: Literal["spectral"]
    variance: Annotated[float, Field(gt=0)]
    length_scale: Annotated[float, Field(gt=0)]


CovarianceConfig = Annotated[
    ScaledIdentityCov | DiagonalCov | PeriodicCov | ClimatologicalCov | SpectralCov,
    Field(discriminator="kind"),
]


# --- methods ----------------------------------------------------------------------------


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


Minimiser = Literal["bfgs", "lbfgs", "nonlinear_cg"]
"""The gradient minimisers (optimistix) a variational method may name."""


class _MethodBase(_Named):
    prior_cov: CovarianceConfig


class OIConfig(_MethodBase):
    """Optimal interpolation (BLUE) at each window time, in closed form."""

    name: Literal["oi"]


class _MinimisedConfig(_MethodBase):
    """A variational method minimised by `minimiser` to `rtol`/`atol` in `max_steps`."""

    minimiser: Minimiser | None = None
    rtol: Annotated[float, Field(gt=0)] = 1e-6
    atol: Annotated[float, Field(gt=0)] = 1e-6
    max_steps: Annotated[int, Field(ge=1)] = 500


class ThreeDVarConfig(_MinimisedConfig):
    """3DVar at each window time (default minimiser BFGS)."""

    name: Literal["3dvar"]


class StrongFourDVarConfig(_MinimisedConfig):
    """Strong-constraint 4DVar; besides the gradient minimisers it may name the
    least-squares solver `levenberg_marquardt` (its default)."""

    name: Literal["strong_4dvar"]
    minimiser: Minimiser | Literal["levenberg_marquardt"] | None = None


class WeakFourDVarConfig(_MinimisedConfig):
    """Weak-constraint 4DVar with model-error covariance `model_error_cov` (Q)."""

    name: Literal["weak_4dvar"]
    model_error_cov: CovarianceConfig


class IncrementalFourDVarConfig(_MethodBase):
    """Incremental 4DVar: `n_outer` Gauss–Newton outer loops of `n_inner` CG iterations,
    to the relative tolerance `rtol`."""

    name: Literal["incremental_4dvar"]
    rtol: Annotated[float, Field(gt=0)] = 1e-6
    n_outer: Annotated[int, Field(ge=1)] = 10
    n_inner: Annotated[int, Field(ge=1)] = 50


class _LearnedConfig(_MethodBase):
    """A learned method: its `network`, its `training` and where `vardax-cycle train`
    writes its parameters (`checkpoint`, default `<method>.eqx` beside the store; its
    metadata in `<checkpoint>.json`). `prior_cov` scores its analyses and serves the gate
    and the training windows' backgrounds."""

    network: NetworkConfig = None  # type: ignore[assignment]  (filled by _defaults)
    training: TrainingConfig = None  # type: ignore[assignment]
    checkpoint: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data):
        # explicit defaults, so that a store's identity records them as set
        if isinstance(data, dict):
            data = {"network": {}, "training": {}} | data
        return data


class FourDVarNetConfig(_LearnedConfig):
    """FourDVarNet: a learned prior and a learned gradient solver of the 4DVar cost."""

    name: Literal["fourdvarnet"]


class AmortizedPosteriorConfig(_LearnedConfig):
    """The amortized posterior: one forward pass from the observations (and background)
    to a diagonal Gaussian over the window."""

    name: Literal["amortized"]


class LocalisationConfig(_Config):
    """Gaspari–Cohn localisation of half-width `1.82 × radius` (DAPPER's convention): the
    taper is 0.63 at `radius` (in the model's coordinates: sites on the Lorenz-96 ring,
    grid cells of the QG model) and zero beyond `3.64 × radius`."""

    radius: Annotated[float, Field(gt=0)]


class _EnsembleConfig(_MethodBase):
    """An ensemble method of `members` states. `prior_cov` spreads the first cycle's
    ensemble around the first guess (`x + B^{1/2} ξ`). `inflation` multiplies the
    analysis anomalies; `rtps` relaxes the analysis spread towards the background's
    (0: off, 1: all the way). `seed` keys the random numbers (with each cycle's index)."""

    members: Annotated[int, Field(ge=2)]
    inflation: Annotated[float, Field(ge=1)] = 1.0
    rtps: Annotated[float, Field(ge=0, le=1)] = 0.0
    seed: int = 0


class ETKFConfig(_EnsembleConfig):
    """The ensemble transform Kalman filter; `rotate`: a random mean-preserving rotation
    of the members after each analysis."""

    name: Literal["etkf"]
    rotate: bool = False


class EnKFConfig(_EnsembleConfig):
    """The stochastic EnKF with perturbed observations."""

    name: Literal["enkf"]


class LETKFConfig(_EnsembleConfig):
    """The local ETKF: one analysis per state variable with tapered observations;
    `rotate` as for etkf."""

    name: Literal["letkf"]
    localisation: LocalisationConfig
    rotate: bool = False


class IEnKSConfig(_EnsembleConfig):
    """The iterative ensemble Kalman smoother over the window (Gauss–Newton in ensemble
    space, at most `max_iterations`, until `|δw|² < tolerance·N`); `rotate` as for etkf."""

    name: Literal["ienks"]
    max_iterations: Annotated[int, Field(ge=1)] = 10
    tolerance: Annotated[float, Field(gt=0)] = 1e-5
    rotate: bool = False


class HybridEnVarConfig(_EnsembleConfig):
    """Hybrid 3D/4D-EnVar: `B = static_weight·B_static + (1 − static_weight)·L∘Pₑ`
    (`prior_cov` is the static B), `n_outer` Gauss–Newton loops of `n_inner` conjugate
    gradients to `rtol`; the members are updated by the LETKF and recentred."""

    name: Literal["hybrid_envar"]
    localisation: LocalisationConfig
    static_weight: Annotated[float, Field(ge=0, le=1)] = 0.1
    n_outer: Annotated[int, Field(ge=1)] = 1
    n_inner: Annotated[int, Field(ge=1)] = 100
    rtol: Annotated[float, Field(gt=0)] = 1e-8


EnsembleMethodConfig = _EnsembleConfig
"""The config classes of ensemble methods."""


class PluginMethodConfig(_MethodBase, _Plugin):
    """An analysis method of one's own. The target is called with `params` and, of `model`,
    `obs_operator`, `prior_cov` (from `prior_cov` here) and `obs_cov`, those its signature
    names; it returns a `vardax_core.AbstractAnalysisMethod`."""

    _kind: ClassVar[str] = "method"


MethodConfig = _by_name(
    OIConfig,
    ThreeDVarConfig,
    StrongFourDVarConfig,
    WeakFourDVarConfig,
    IncrementalFourDVarConfig,
    FourDVarNetConfig,
    AmortizedPosteriorConfig,
    EnKFConfig,
    ETKFConfig,
    LETKFConfig,
    IEnKSConfig,
    HybridEnVarConfig,
    plugin=PluginMethodConfig,
)
LearnedMethodConfig = _LearnedConfig
"""The config classes of learned methods (trained, with a checkpoint)."""


# --- cycling, store, gates --------------------------------------------------------------


def _check_time(value: str) -> str:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"not an ISO 8601 time: {value!r} (e.g. 2026-01-01T00:00Z)") from err
    return value


class CyclingConfig(_Config):
    """Cycle points `origin + k·interval`; one interval is `shift_steps` model steps, and
    each cycle's window spans `window_steps` from its cycle point. `shift_steps` defaults
    to `window_steps` (back-to-back windows); fewer makes the windows overlap — a lagged
    smoother (`ienks`, 4D-EnVar, 4DVar) whose window slides by `shift_steps`, as DAPPER's
    `Lag` and `Shift`; each cycle starts from the previous analysis `shift_steps` into
    its window.

    `lead_steps`: model steps after the window end of the product forecast.
    `first_guess_std`: the first background is the truth plus this noise (OSSE) — or the
    climatological mean when the truth is unknown.
    """

    origin: str
    interval: str = "PT6H"
    window_steps: Annotated[int, Field(ge=1)]
    shift_steps: Annotated[int, Field(ge=1)] | None = None
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

    @model_validator(mode="before")
    @classmethod
    def _default_shift(cls, data):
        # a shift of one window is back-to-back windows, the default: one store identity
        if isinstance(data, dict) and data.get("shift_steps") == data.get("window_steps"):
            data = {k: v for k, v in data.items() if k != "shift_steps"}
        return data

    @model_validator(mode="after")
    def _shift(self):
        if self.shift_steps is not None and self.shift_steps > self.window_steps:
            raise ValueError(
                f"cycling.shift_steps ({self.shift_steps}) must be at most window_steps "
                f"({self.window_steps}): windows may overlap, not leave steps out"
            )
        return self

    @property
    def steps_per_cycle(self) -> int:
        """Model steps from one cycle point to the next (`shift_steps`, else the window)."""
        return self.window_steps if self.shift_steps is None else self.shift_steps

    def steps_to_cover(self, n_cycles: int) -> int:
        """Model steps from the origin to the end of the window of cycle `n_cycles − 1`."""
        return (n_cycles - 1) * self.steps_per_cycle + self.window_steps if n_cycles else 0

    def cycles_covered(self, n_steps: int) -> int:
        """How many cycles' windows lie within `n_steps` model steps of the origin."""
        return (
            0
            if n_steps < self.window_steps
            else (n_steps - self.window_steps) // self.steps_per_cycle + 1
        )


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
    `chi2_dof` (for an ensemble against its own `H Pₑ Hᵀ + R`), every increment within
    `increment_sigma`·σ_b; for a learned method the oracle (`oracle`, on by default with
    its defaults); for an ensemble a background spread of at least `min_spread` (default
    1% of `observations.error_std`: below it the ensemble has collapsed); on failure
    `policy`."""

    oracle: OracleConfig | None = None
    chi2_dof: Pair = (0.05, 20.0)
    increment_sigma: Annotated[float, Field(gt=0)] = 10.0
    min_spread: Annotated[float, Field(ge=0)] | None = None
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


class DaskConfig(_Config):
    """Where Dask tasks run (a sweep's members, an ensemble's forecasts, a cycle's member
    forecasts): the `address` of a running `dask.distributed` scheduler
    (`tcp://host:8786`), or, without one, a LocalCluster of `n_workers` processes with
    `threads_per_worker` threads."""

    address: str | None = None
    n_workers: Annotated[int, Field(ge=1)] = 2
    threads_per_worker: Annotated[int, Field(ge=1)] = 1


class ComputeConfig(_Config):
    """Where a cycle's work runs; it changes no result, so a store does not record it.
    `member_forecasts`: an ensemble method's member forecasts over the window in one `vmap`
    in the run's process (`vmap`), or spread over the Dask cluster of `dask` (`dask`: one
    task per chunk of members, a chunk per worker thread; for models whose forecast
    dominates a cycle). Per-cycle runs only: block mode scans whole cycles in one compiled
    loop."""

    member_forecasts: Literal["vmap", "dask"] = "vmap"
    dask: DaskConfig = DaskConfig()


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
    compute: ComputeConfig = ComputeConfig()
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
    def _window(self):
        # what depends on the model (its state's size and shape, its grid) is checked when
        # the experiment is built (`tasks.experiment`), against the model itself
        for key in ("window_steps", "shift_steps"):
            steps = getattr(self.cycling, key)
            if steps is not None and steps % self.observations.every_steps:
                raise ValueError(
                    f"cycling.{key} ({steps}) must be a multiple of "
                    f"observations.every_steps ({self.observations.every_steps})"
                )
        return self


# --- sweeps on a Dask cluster -----------------------------------------------------------


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
