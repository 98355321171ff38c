"""The one registry from config classes to `vardax_core` objects: what a config means.

Each config class of a model, covariance, observation network or analysis method has one
entry here: the core class it names (models) or the builder that makes its core object
(everything else). Nothing else in the project switches on a config's name; what differs
between core objects (a state's shape, a periodic grid, a linear operator, a 4D or a learned
method) is asked of the core objects themselves.

Adding a model or a method is one core class, one config class (in `configs/_models.py`,
added to its union) and one entry below. A builder's `ValueError` (the core's own check of
its arguments) becomes a `ConfigError` naming the config file and key.

No I/O here: what a builder reads or caches (a checkpoint, a climatological B computed
once) comes through the `Build` it is given (`tasks.build_experiment` provides it).
"""

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

import vardax_core as vc

from . import _models as cf
from . import plugins
from ._load import ConfigError

B_SEED = 1
"""Seed of the free runs that estimate a climatology (a B, a cold start, a network's
normalisation): not the OSSE truth's."""

BACKGROUND_SCALES = (0.1, 1.0)
"""Range of the factor on `B^{1/2}` noise of a learned method's training backgrounds."""

MODELS: dict[type, Callable] = {}
INTEGRATORS: dict[str, Callable] = {
    "rk4": lambda m: vc.RK4(substeps=m.substeps),
    "diffrax": lambda m: vc.Diffrax(),
}
OPERATORS: dict[str, type[vc.AbstractObsOperator]] = {
    "identity": vc.SubsetObs,
    "arctan": vc.NonlinearObs,
}
MINIMISERS: dict[str, type] = {
    "bfgs": optx.BFGS,
    "lbfgs": optx.LBFGS,
    "nonlinear_cg": optx.NonlinearCG,
    "levenberg_marquardt": optx.LevenbergMarquardt,
}
NETWORK_POINTS: dict[type, Callable] = {
    cf.GriddedNetwork: lambda n, shape: (vc.gridded_points(shape, n.every, n.offset), None),
    cf.StationNetwork: lambda n, shape: (vc.station_points(shape, n.count, n.seed), None),
    cf.SwathNetwork: lambda n, shape: vc.swath_points(shape, n.tracks, n.width, n.spacing, n.angle),
}
COVARIANCES: dict[type, Callable] = {}
METHODS: dict[type, Callable] = {}
NETWORKS: dict[type, Callable] = {}


def _entry(table: dict, config_class: type):
    def register(fn):
        table[config_class] = fn
        return fn

    return register


def _compute(name: str, what: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
    return np.asarray(compute())


@dataclass(frozen=True)
class Build:
    """What a builder may use: the config file (for errors), the experiment's config and
    its model; `cached(name, what, compute)` keeps an array worth computing once (default:
    computes it); `load_network(like)` reads a learned method's trained parameters into
    the network `like` (default: none are there, `LookupError`)."""

    source: str
    cfg: cf.ExperimentConfig
    model: vc.AbstractForwardModel
    cached: Callable = _compute
    load_network: Callable | None = None

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    @property
    def is_field(self) -> bool:
        """The model's state is a 2-D field (a grid), not a vector."""
        return len(self.model.state_shape) == 2


@contextlib.contextmanager
def config_key(source: str, key: str):
    """Turns the core's `ValueError` about its arguments into a `ConfigError` on `key`."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{source}: {key}: {err}") from None


# --- models and observation operators ---------------------------------------------------


def build_model(cfg: cf.ExperimentConfig, source: str) -> vc.AbstractForwardModel:
    with config_key(source, "model"):
        return MODELS[type(cfg.model)](cfg.model, source)


def _builtin_model(cls: type[vc.AbstractForwardModel]):
    def build(m, source: str):
        params = m.model_dump(exclude={"name", "integrator", "substeps"})
        return cls(**params, integrator=INTEGRATORS[m.integrator](m))

    return build


MODELS.update(
    {
        cf.Lorenz63Config: _builtin_model(vc.Lorenz63),
        cf.Lorenz96Config: _builtin_model(vc.Lorenz96),
        cf.Lorenz96TwoLevelConfig: _builtin_model(vc.Lorenz96TwoLevel),
        cf.QGConfig: _builtin_model(vc.QuasiGeostrophic),
    }
)

_VECTOR_FIELD_KEYS = ("dt", "state_size", "dims", "periodic", "integrator", "substeps")


@_entry(MODELS, cf.PluginModelConfig)
def _plugin_model(m: cf.PluginModelConfig, source: str):
    made = plugins.call(plugins.resolve(m, "model", source), m, "model", source, {})
    if isinstance(made, vc.AbstractForwardModel):
        given = [f"model.{k}" for k in _VECTOR_FIELD_KEYS if k in m.model_fields_set]
        if given:
            raise ConfigError(
                f"{source}: {', '.join(given)}: for a plain vector field; {m.reference} "
                f"returned the model {type(made).__name__}, which has its own"
            )
        return _checked_model(made, m, source)
    if not callable(made):
        raise ConfigError(
            f"{source}: model: {m.reference} returned a {type(made).__name__}: it must return "
            "a vardax_core.AbstractForwardModel or a vector field f(x) -> dx/dt"
        )
    missing = [f"model.{k}" for k in ("dt", "state_size") if getattr(m, k) is None]
    if missing:
        raise ConfigError(
            f"{source}: {' and '.join(missing)}: needed, since {m.reference} returns a plain "
            "vector field (the model's time step and the length of its state)"
        )
    try:
        if (m.dims or "state") in RESERVED_DIMS:
            raise ConfigError(f"{source}: model.dims: {m.dims!r} is reserved by the store")
        return vc.VectorFieldModel(
            made,
            m.state_size,
            m.dt,
            integrator=INTEGRATORS[m.integrator](m),
            dims=(m.dims or "state",),
            ring=bool(m.periodic),
        )
    except Exception as err:  # the user's function, traced on a state of state_size
        raise ConfigError(
            f"{source}: model: the vector field of {m.reference} on a state of model.state_size "
            f"{m.state_size}: {type(err).__name__}: {err}"
        ) from None


def _checked_model(model: vc.AbstractForwardModel, m, source: str):
    """A plugin's model, checked for what the pipeline asks of it (its state's size, shape,
    dimension names, coordinates and time step)."""
    what = f"{source}: model: {m.reference} returned {type(model).__name__}, whose"
    try:
        n, shape, dims = model.state_size, tuple(model.state_shape), tuple(model.state_dims)
        coords, dt = model.state_coords, float(model.dt)
    except Exception as err:
        raise ConfigError(f"{what} state cannot be read: {type(err).__name__}: {err}") from None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{what} state_size is {n!r}, not a positive int")
    if int(np.prod(shape)) != n or len(dims) != len(shape):
        raise ConfigError(
            f"{what} state_shape {shape} and state_dims {dims} do not make a state of {n}"
        )
    clash = sorted(set(dims) & RESERVED_DIMS)
    if clash:
        raise ConfigError(f"{what} dimension names {clash} are reserved by the store")
    bad = [d for d, s in zip(dims, shape, strict=True) if len(np.ravel(coords.get(d, ()))) != s]
    if bad:
        raise ConfigError(f"{what} state_coords lack or mis-size {bad}")
    if not dt > 0:
        raise ConfigError(f"{what} dt is {dt}, not positive")
    return model


@dataclass(frozen=True)
class ObservationLayout:
    """The observation operator of an experiment and where its observations are: the
    state `locations` a vector state's observations sit at (their numbers, for a field's
    network), a field's `points` `(y, x)` and, for swaths, each point's `track`.

    Observations at positions (`observations.capacity`): `locations` are the `capacity`
    slots of a window time, `position_dims` the model's dimensions the positions are given
    in, and `grid` the model's grid, which builds each window's interpolation."""

    operator: vc.AbstractObsOperator
    locations: tuple[int, ...]
    points: np.ndarray | None = None
    track: np.ndarray | None = None
    position_dims: tuple[str, ...] = ()
    grid: vc.RegularGrid | None = None


def build_observations(b: Build) -> ObservationLayout:
    o, name = b.cfg.observations, b.cfg.model.label
    if o.capacity is not None:
        return _positioned(b)
    if b.is_field:
        if o.network is None:
            raise b.error(
                "observations",
                f"observations.network is needed for the 2-D model {name} (kind gridded, "
                "stations or swath), or capacity for observations with positions",
            )
        if o.locations != "all" or o.operator != "identity":
            raise b.error(
                "observations",
                "observations.locations and observations.operator are for 1-D models; the "
                f"{name} model's observations are laid out by observations.network",
            )
        shape = b.model.state_shape
        points, track = NETWORK_POINTS[type(o.network)](o.network, shape)
        with config_key(b.source, "observations.network"):
            H = vc.BilinearObs(points, shape)
        return ObservationLayout(H, tuple(range(H.obs_size)), np.asarray(H.points), track)
    if o.network is not None:
        raise b.error(
            "observations",
            f"observations.network is for a 2-D model; {name} observes observations.locations",
        )
    n = b.model.state_size
    locations = o.location_indices(n)
    bad = [i for i in locations if i >= n]
    if bad:
        raise b.error(
            "observations", f"observations.locations {bad} are outside the {name} state of size {n}"
        )
    if not locations:
        raise b.error("observations", "observations.locations selects no state component")
    if isinstance(o.operator, cf.PluginOperatorConfig):
        return _plugin_operator(b, o.operator, locations)
    return ObservationLayout(OPERATORS[o.operator](locations, n), tuple(locations))


def _plugin_operator(b: Build, op: cf.PluginOperatorConfig, locations: list[int]):
    key, n = "observations.operator", b.model.state_size
    factory = plugins.resolve(op, key, b.source)
    takes_locations = plugins.takes(factory, "locations")
    if not takes_locations and b.cfg.observations.locations != "all":
        raise b.error(
            "observations.locations",
            f"{op.reference} does not take locations: its outputs are the observations "
            "(numbered from 0 in the file's location column); leave locations out",
        )
    made = plugins.call(factory, op, key, b.source, {"locations": list(locations), "state_size": n})
    if callable(made) and not isinstance(made, vc.AbstractObsOperator):
        try:
            out = jax.eval_shape(made, jax.ShapeDtypeStruct((n,), jnp.result_type(float)))
            made = vc.FunctionObs(made, n, int(np.prod(out.shape)), linear=op.linear)
        except Exception as err:
            raise b.error(
                key, f"the function of {op.reference} on a state of size {n}: {err}"
            ) from None
    elif isinstance(made, vc.AbstractObsOperator) and "linear" in op.model_fields_set:
        raise b.error(
            f"{key}.linear",
            f"for a plain function; {op.reference} returned {type(made).__name__}, which "
            "says itself whether it is linear",
        )
    if not isinstance(made, vc.AbstractObsOperator):
        raise b.error(
            key,
            f"{op.reference} returned a {type(made).__name__}: it must return a "
            "vardax_core.AbstractObsOperator or a function h(x) -> y",
        )
    if made.state_size != n:
        raise b.error(
            key,
            f"{op.reference} takes states of size {made.state_size}, the "
            f"{b.cfg.model.label} state has {n}",
        )
    if takes_locations and made.obs_size != len(locations):
        raise b.error(
            key,
            f"{op.reference} returns {made.obs_size} observations for {len(locations)} locations",
        )
    slots = tuple(locations) if takes_locations else tuple(range(made.obs_size))
    return ObservationLayout(made, slots)


RESERVED_DIMS = frozenset(
    {"cycle", "window_time", "lead_time", "obs", "time", "location", "member"}
    | {"value", "error_std", "mask", "qc", "source", "hash"}  # the store's obs_<name>s
)
"""Names a model's dimension may not have: the store's own dimensions, and (for positions,
stored as `obs_<dim>`) the names of its observation variables."""


def _positioned(b: Build) -> ObservationLayout:
    """Observations that carry their positions, up to `capacity` per window time."""
    model, capacity, key = b.model, b.cfg.observations.capacity, "observations.capacity"
    declares = type(model).state_coords is not vc.AbstractForwardModel.state_coords
    if not (model.periodic or declares):
        raise b.error(
            key,
            f"positions are interpolated on a grid; the {b.cfg.model.label} state is not one "
            "(a model on a grid is periodic or declares its state_coords): give locations",
        )
    clash = sorted(set(model.state_dims) & RESERVED_DIMS)
    if clash:
        raise b.error(key, f"the model's dimension names {clash} are reserved by the store")
    with config_key(b.source, key):
        grid = vc.RegularGrid.of(model)
    H = grid.operator(np.zeros((capacity, len(grid.shape))))
    return ObservationLayout(
        H, tuple(range(capacity)), position_dims=tuple(model.state_dims), grid=grid
    )


# --- covariances ------------------------------------------------------------------------


def build_covariance(cov, b: Build, key: str) -> vc.AbstractCovariance:
    with config_key(b.source, key):
        return COVARIANCES[type(cov)](cov, b, key)


def _vector_only(cov, b: Build, key: str) -> None:
    if b.is_field:
        n = b.model.state_size
        raise b.error(
            key,
            f"covariance kind {cov.kind} would form a {n} × {n} matrix for the "
            f"{b.cfg.model.label} model: use spectral (or scaled_identity)",
        )


@_entry(COVARIANCES, cf.ScaledIdentityCov)
def _scaled_identity(cov, b: Build, key: str):
    return vc.ScaledIdentityCovariance(b.model.state_size, cov.variance)


@_entry(COVARIANCES, cf.DiagonalCov)
def _diagonal(cov, b: Build, key: str):
    _vector_only(cov, b, key)
    n = b.model.state_size
    if len(cov.variances) != n:
        raise b.error(key, f"variances has {len(cov.variances)} entries, the state has {n}")
    return vc.DiagonalCovariance(cov.variances)


@_entry(COVARIANCES, cf.PeriodicCov)
def _periodic(cov, b: Build, key: str):
    _vector_only(cov, b, key)
    return vc.periodic_covariance(b.model.state_size, cov.length_scale, cov.variance, cov.kernel)


@_entry(COVARIANCES, cf.SpectralCov)
def _spectral(cov, b: Build, key: str):
    if not b.model.periodic:
        raise b.error(
            key,
            "covariance kind spectral is for a homogeneous periodic grid (a ring, a doubly "
            f"periodic field), which the {b.cfg.model.label} model's state is not",
        )
    return vc.SpectralCovariance(b.model.state_shape, cov.length_scale, cov.variance)


@_entry(COVARIANCES, cf.ClimatologicalCov)
def _climatological(cov, b: Build, key: str):
    _vector_only(cov, b, key)

    def sample():
        climate = vc.nature_run(b.model, jax.random.PRNGKey(B_SEED), cov.climate_steps, 1000)
        return vc.sample_covariance(climate)

    what = {"climate_steps": cov.climate_steps, "spinup_steps": 1000}
    matrix = b.cached("climate-covariance", cache_key(b, what), sample)
    return vc.scaled_covariance(matrix, cov.scale, cov.nugget)


def cache_key(b: Build, what: dict) -> str:
    """A short hash of what a cached array depends on: the model's config, the seed of its
    free run and `what` (so an experiment whose science is the same — another process,
    another member of a sweep — finds it)."""
    key = {"model": b.cfg.model.model_dump(mode="json"), "seed": B_SEED, **what}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# --- analysis methods ---------------------------------------------------------------------


@dataclass(frozen=True)
class MethodParts:
    """What every method is built from: the observation operator, B and R."""

    obs_operator: vc.AbstractObsOperator
    prior_cov: vc.AbstractCovariance
    obs_cov: vc.AbstractCovariance

    def kw(self) -> dict:
        return {"obs_operator": self.obs_operator, "prior_cov": self.prior_cov}

    def as_args(self) -> tuple:
        return self.obs_operator, self.prior_cov, self.obs_cov


def build_parts(b: Build, obs_operator: vc.AbstractObsOperator) -> MethodParts:
    """`H`, `B` (`method.prior_cov`) and `R` (`observations.error_std`² · I)."""
    B = build_covariance(b.cfg.method.prior_cov, b, "method.prior_cov")
    R = vc.ScaledIdentityCovariance(obs_operator.obs_size, b.cfg.observations.error_std**2)
    return MethodParts(obs_operator, B, R)


SLIDING_METHODS = (
    cf.StrongFourDVarConfig,
    cf.WeakFourDVarConfig,
    cf.IncrementalFourDVarConfig,
    cf.IEnKSConfig,
    cf.HybridEnVarConfig,
)
"""The methods whose windows may overlap (`cycling.shift_steps < window_steps`): their
analysis is one trajectory through the window (a 4DVar's, the iEnKS's members forecast
through it, 4D-EnVar's increment carried by the members), so a cycle can hand on from
inside it. The iEnKS and hybrid assimilate only the newest `shift_steps` rows of each
window (each observation once); a 4DVar assimilates its whole window, as DAPPER's does."""


def build_method(b: Build, parts: MethodParts) -> vc.AbstractAnalysisMethod:
    """The configured method (a learned one loaded from its checkpoint: raises
    `storage.CheckpointError` with what to do when there is none)."""
    m, c = b.cfg.method, b.cfg.cycling
    if c.steps_per_cycle < c.window_steps and not isinstance(m, SLIDING_METHODS):
        raise b.error(
            "cycling.shift_steps",
            f"overlapping windows ({c.shift_steps} < window_steps {c.window_steps}) need a "
            f"method whose analysis is one trajectory through the window (strong_4dvar, "
            f"weak_4dvar, incremental_4dvar, ienks, hybrid_envar); {m.name} is not one",
        )
    with config_key(b.source, "method"):
        return METHODS[type(m)](m, b, parts)


def _new_rows(b: Build) -> dict:
    """`new_rows` of a method that assimilates only a sliding window's newest rows."""
    c = b.cfg.cycling
    return {"new_rows": c.shift_steps} if c.steps_per_cycle < c.window_steps else {}


def _minimiser(m) -> dict:
    if m.minimiser is None:
        return {}
    return {"minimiser": MINIMISERS[m.minimiser](rtol=m.rtol, atol=m.atol)}


@_entry(METHODS, cf.OIConfig)
def _oi(m, b: Build, p: MethodParts):
    if not p.obs_operator.is_linear:
        op = b.cfg.observations.operator
        raise b.error(
            "method",
            f"method.name {m.name} needs a linear observation operator, but "
            f"observations.operator is {getattr(op, 'reference', op)}: use 3dvar or a 4dvar",
        )
    return vc.OptimalInterpolation(**p.kw(), obs_cov=p.obs_cov)


@_entry(METHODS, cf.ThreeDVarConfig)
def _three_d_var(m, b: Build, p: MethodParts):
    return vc.ThreeDVar(**p.kw(), obs_cov=p.obs_cov, **_minimiser(m), max_steps=m.max_steps)


@_entry(METHODS, cf.StrongFourDVarConfig)
def _strong(m, b: Build, p: MethodParts):
    if b.is_field and m.minimiser in (None, "levenberg_marquardt"):
        raise b.error(
            "method.minimiser",
            f"strong_4dvar on the {b.cfg.model.label} model needs a gradient minimiser (lbfgs, "
            "bfgs, nonlinear_cg): Levenberg-Marquardt forms the Jacobian; or use "
            "incremental_4dvar",
        )
    kw = dict(**p.kw(), obs_cov=p.obs_cov, **_minimiser(m), max_steps=m.max_steps)
    return vc.StrongFourDVar(b.model, **kw)


@_entry(METHODS, cf.WeakFourDVarConfig)
def _weak(m, b: Build, p: MethodParts):
    Q = build_covariance(m.model_error_cov, b, "method.model_error_cov")
    kw = dict(**p.kw(), obs_cov=p.obs_cov, **_minimiser(m), max_steps=m.max_steps)
    return vc.WeakFourDVar(b.model, model_error_cov=Q, **kw)


@_entry(METHODS, cf.IncrementalFourDVarConfig)
def _incremental(m, b: Build, p: MethodParts):
    kw = dict(n_outer=m.n_outer, n_inner=m.n_inner, tolerance=m.rtol)
    return vc.IncrementalFourDVar(b.model, **p.kw(), obs_cov=p.obs_cov, **kw)


@_entry(METHODS, cf.PluginMethodConfig)
def _plugin_method(m: cf.PluginMethodConfig, b: Build, p: MethodParts):
    available = {"model": b.model, **p.kw(), "obs_cov": p.obs_cov}
    made = plugins.call(plugins.resolve(m, "method", b.source), m, "method", b.source, available)
    if not isinstance(made, vc.AbstractAnalysisMethod):
        raise b.error(
            "method",
            f"{m.reference} returned a {type(made).__name__}, not a "
            "vardax_core.AbstractAnalysisMethod",
        )
    if made.state_size != b.model.state_size:
        raise b.error(
            "method",
            f"{m.reference} analyses states of size {made.state_size}, the model's have "
            f"{b.model.state_size}",
        )
    m_obs, m_cov = made.obs_operator.obs_size, made.obs_cov.size
    if m_obs != p.obs_operator.obs_size or m_cov != p.obs_operator.obs_size:
        raise b.error(
            "method",
            f"{m.reference} observes {m_obs} observations (obs_cov {m_cov}) where the "
            f"observation layout has {p.obs_operator.obs_size}: build it from obs_operator "
            "and obs_cov",
        )
    if b.cfg.observations.capacity is not None and not made.window_observations:
        raise b.error(
            "method",
            f"{m.reference} ({type(made).__name__}) does not declare window_observations: "
            "observations at positions need a method that applies each window's operators "
            "and errors (vardax_core.map_times)",
        )
    return made


def _ensemble_kw(m: cf.EnsembleMethodConfig) -> dict:
    return {"members": m.members, "inflation": vc.Inflation(m.inflation, m.rtps)}


def _obs_rows(b: Build) -> tuple[int, ...]:
    """The window times that can hold observations (every `every_steps`; row 0 is the
    previous cycle's)."""
    every, window = b.cfg.observations.every_steps, b.cfg.cycling.window_steps
    return tuple(range(every, window + 1, every))


def _localisation(m, b: Build, p: MethodParts) -> vc.Localisation:
    try:
        localisation = vc.Localisation.of(b.model, m.localisation.radius)
    except ValueError as err:
        raise b.error(
            "method.localisation",
            f"{m.name} localises by distance on the model's grid, and the "
            f"{b.cfg.model.label} model has none: {err}",
        ) from None
    # observations at positions carry theirs; a fixed operator must say where it looks
    if (
        b.cfg.observations.capacity is None
        and p.obs_operator.positions(b.model.state_shape) is None
    ):
        raise b.error(
            "method.localisation",
            f"{m.name} localises observations by their positions, and the observation "
            f"operator {type(p.obs_operator).__name__} does not give them (define its "
            "positions(shape), see vardax_core.AbstractObsOperator.positions)",
        )
    return localisation


@_entry(METHODS, cf.ETKFConfig)
def _etkf(m, b: Build, p: MethodParts):
    return vc.ETKF(*p.as_args(), rotate=m.rotate, obs_rows=_obs_rows(b), **_ensemble_kw(m))


@_entry(METHODS, cf.EnKFConfig)
def _enkf(m, b: Build, p: MethodParts):
    return vc.EnKF(*p.as_args(), obs_rows=_obs_rows(b), **_ensemble_kw(m))


@_entry(METHODS, cf.LETKFConfig)
def _letkf(m, b: Build, p: MethodParts):
    loc = _localisation(m, b, p)
    kw = dict(localisation=loc, rotate=m.rotate, obs_rows=_obs_rows(b))
    return vc.LETKF(*p.as_args(), **kw, **_ensemble_kw(m))


@_entry(METHODS, cf.IEnKSConfig)
def _ienks(m, b: Build, p: MethodParts):
    kw = dict(max_iterations=m.max_iterations, tolerance=m.tolerance, rotate=m.rotate)
    return vc.IEnKS(b.model, *p.as_args(), **kw, **_new_rows(b), **_ensemble_kw(m))


def ensemble_members(cfg: cf.ExperimentConfig) -> int:
    """The ensemble size of the experiment's method (0: not an ensemble method)."""
    return cfg.method.members if isinstance(cfg.method, cf.EnsembleMethodConfig) else 0


HYBRID_MAX_STATE = 4096
"""The largest state `hybrid_envar` forms a dense `n × n` localisation matrix for (a
non-periodic grid; on a periodic one `L^{1/2}` is applied by FFT, at any size)."""


@_entry(METHODS, cf.HybridEnVarConfig)
def _hybrid_envar(m, b: Build, p: MethodParts):
    if not b.model.periodic and b.model.state_size > HYBRID_MAX_STATE:
        raise b.error(
            "method",
            f"hybrid_envar forms the n × n localisation matrix of a non-periodic grid, too "
            f"large for the {b.model.state_size} variables of the {b.cfg.model.label} model: "
            "use letkf",
        )
    kw = dict(static_weight=m.static_weight, n_outer=m.n_outer, n_inner=m.n_inner)
    return vc.HybridEnVar.build(
        *p.as_args(),
        localisation=_localisation(m, b, p),
        tolerance=m.rtol,
        **kw,
        **_new_rows(b),
        **_ensemble_kw(m),
    )


LEARNED_METHODS: dict[type, type[vc.AbstractAnalysisMethod]] = {
    cf.FourDVarNetConfig: vc.FourDVarNetMethod,
    cf.AmortizedPosteriorConfig: vc.AmortizedMethod,
}
"""The analysis-step class of each learned method's config: `cls(network, H, B, R)`."""


def learned_method(b: Build, parts: MethodParts, net) -> vc.AbstractAnalysisMethod:
    """The learned method of the config with the network `net`."""
    return LEARNED_METHODS[type(b.cfg.method)](net, *parts.as_args())


def _load_learned(m, b: Build, p: MethodParts):
    like = new_network(b, p.obs_operator)  # the architecture is checked before any reading
    if b.load_network is None:
        raise LookupError(f"{b.source}: method {m.name} needs a trained network")
    return learned_method(b, p, b.load_network(like))


METHODS.update(dict.fromkeys(LEARNED_METHODS, _load_learned))


def new_network(b: Build, obs_operator):
    """An untrained network of the learned method's architecture, normalised by the model's
    climatology (observations by their error and the states' spread)."""
    m = b.cfg.method
    if b.cfg.observations.capacity is not None:
        raise b.error(
            "method",
            f"method {m.name} learns one fixed observation layout; observations with "
            "positions (observations.capacity) need a classical method",
        )
    mean, scale = _normalisation(b)
    obs_scale = jnp.sqrt(b.cfg.observations.error_std**2 + jnp.mean(scale**2))
    common = dict(
        key=jax.random.PRNGKey(m.network.seed),
        hidden_dim=m.network.hidden_dim,
        mean=mean,
        scale=scale,
        obs_scale=obs_scale,
    )
    T = b.cfg.cycling.window_steps + 1
    with config_key(b.source, "method.network"):
        return NETWORKS[type(m)](m.network, b, obs_operator, T, common)


def _normalisation(b: Build):
    climate = vc.nature_run(b.model, jax.random.PRNGKey(B_SEED), 2000, 1000)
    if b.is_field:  # a homogeneous field: one mean and spread
        return jnp.mean(climate), jnp.std(climate)
    return jnp.mean(climate, axis=0), jnp.std(climate, axis=0)


@_entry(NETWORKS, cf.FourDVarNetConfig)
def _fourdvarnet(net, b: Build, H, T: int, common: dict):
    kw = common | dict(
        latent_dim=net.latent_dim,
        n_solver_steps=net.n_solver_steps,
        prior=net.prior,
        gradient_mode=net.gradient_mode,
    )
    if b.is_field:
        return vc.FourDVarNet2D(b.model.state_shape, T, **kw)
    return vc.FourDVarNet1D(b.model.state_size, T, **kw)


@_entry(NETWORKS, cf.AmortizedPosteriorConfig)
def _amortized(net, b: Build, H, T: int, common: dict):
    if b.is_field:
        raise b.error(
            "method",
            "method amortized predicts every state of the window with an MLP: for vector "
            f"states; on the {b.cfg.model.label} model use fourdvarnet",
        )
    shapes = ((T, H.obs_size), (T, b.model.state_size))
    kw = dict(context_dim=net.context_dim, depth=net.depth, use_background=True)
    return vc.amortized_posterior(*shapes, **common, **kw)


# --- the gate, the background check, the cycle --------------------------------------------


def build_oracle(b: Build, parts: MethodParts, learned: bool) -> vc.PosteriorAgreement | None:
    """The oracle gate (`gates.oracle`, on by default for a learned method): strong 4DVar's
    Laplace posterior, which the analysis must agree with."""
    o = b.cfg.gates.oracle
    if o is None and learned and not b.is_field:
        o = cf.OracleConfig()
    if o is None:
        return None
    if b.is_field:
        raise b.error(
            "gates.oracle",
            f"gates.oracle forms the oracle's n × n posterior covariance: not for the "
            f"{b.cfg.model.label} model ({b.model.state_size} state variables)",
        )
    strong = vc.StrongFourDVar(
        b.model, parts.obs_operator, parts.prior_cov, parts.obs_cov, max_steps=o.max_steps
    )
    return vc.PosteriorAgreement(strong, k=o.k, min_fraction=o.min_fraction, at=o.at)


def build_gate(b: Build, parts: MethodParts, method: vc.AbstractAnalysisMethod) -> vc.Gate:
    g = b.cfg.gates
    oracle = build_oracle(b, parts, method.learned)
    on_failure = (g.oracle or cf.OracleConfig()).on_failure
    with config_key(b.source, "gates"):
        floor = 0.01 * b.cfg.observations.error_std if g.min_spread is None else g.min_spread
        return vc.Gate.for_method(
            method,
            chi2_dof_bounds=tuple(g.chi2_dof),
            increment_sigma=g.increment_sigma,
            oracle=oracle,
            oracle_fallback=oracle is not None and on_failure == "oracle",
            min_spread=floor if method.ensemble else 0.0,
        )


def build_check(b: Build, obs_operator) -> vc.BackgroundCheck:
    o = b.cfg.observations
    return vc.BackgroundCheck(obs_operator, o.error_std, o.qc.background_std, o.qc.gross_error_k)


def build_cycle(b: Build, parts: MethodParts) -> vc.Cycle:
    """The experiment's cycle: model, method, gate, background check, window and leads."""
    method = build_method(b, parts)
    m = b.cfg.method
    return vc.Cycle(
        b.model,
        method,
        gate=build_gate(b, parts, method),
        check=build_check(b, parts.obs_operator),
        window=b.cfg.cycling.window_steps,
        leads=tuple(b.cfg.cycling.lead_steps),
        seed=m.seed if ensemble_members(b.cfg) else 0,
        shift=b.cfg.cycling.shift_steps,
    )


CLIMATE_SPINUP = 1000
"""Model steps a free run is spun up before its states count as the climate."""

CLIMATE_SPACING = 10
"""Model steps between the states of a free run kept as a climatological sample."""


def _free_run(b: Build, n_steps: int) -> jax.Array:
    """`(n_steps + 1, n)` states of the climate's free run (seed `B_SEED`)."""
    return vc.nature_run(b.model, jax.random.PRNGKey(B_SEED), n_steps, CLIMATE_SPINUP)


def climate_mean(b: Build) -> np.ndarray:
    """The mean of a free model run: the cold start of an experiment without a truth."""
    key = cache_key(b, {"climate_steps": 2000, "spinup_steps": CLIMATE_SPINUP})
    return b.cached("climate-mean", key, lambda: jnp.mean(_free_run(b, 2000), axis=0))


def climate_states(b: Build, members: int) -> np.ndarray:
    """At least 200 (and `2·members`) states of a free model run, `CLIMATE_SPACING` steps
    apart `(S, n)`: what an ensemble's cold start without a truth draws its members from."""
    count = max(200, 2 * members)
    what = {"climate_states": count, "spacing": CLIMATE_SPACING, "spinup_steps": CLIMATE_SPINUP}
    return b.cached(
        "climate-states",
        cache_key(b, what),
        lambda: _free_run(b, count * CLIMATE_SPACING)[CLIMATE_SPACING::CLIMATE_SPACING],
    )


# --- synthetic problems: the OSSE and a learned method's training windows ------------------


def osse_problem(b: Build, observing: ObservationLayout, n_cycles: int, seed: int = 0):
    """Truth and observations for `n_cycles` windows of the experiment (`seed` draws both)."""
    cfg, o = b.cfg, b.cfg.observations
    n_steps = cfg.cycling.steps_to_cover(n_cycles)
    seen = None
    if observing.track is not None:  # swaths: one track per observation time
        seen = vc.swath_schedule(observing.track, n_steps + 1, o.every_steps)
    problem = vc.cycled_problem(
        b.model,
        observing.operator,
        o.error_std,
        n_steps,
        jax.random.PRNGKey(seed),
        spinup_steps=cfg.cycling.spinup_steps,
        first_guess_std=cfg.cycling.first_guess_std,
        obs_every=o.every_steps,
        seen=seen,
    )
    # the window the pipeline reads back from the OSSE's file: each observation's error
    errors = jnp.full(problem.obs.values.shape, o.error_std)
    obs = vc.ObsWindow(problem.obs.values, problem.obs.mask, error_std=errors)
    return dataclasses.replace(problem, obs=obs)


def training_windows(b: Build, parts: MethodParts, n: int, seed: int) -> vc.Batch1D:
    """`n` windows of the experiment's situation: a truth, its observations on the
    configured layout (the first row left to the previous window, as the cycle does) and a
    background forecast from the truth plus `N(0, s²B)`, `s` log-uniform in
    `BACKGROUND_SCALES` (the range of background errors a cycle meets)."""
    cfg = b.cfg
    return vc.simulate_windows(
        b.model,
        parts.obs_operator,
        cfg.observations.error_std,
        jax.random.PRNGKey(seed),
        n,
        cfg.cycling.window_steps,
        obs_every=cfg.observations.every_steps,
        spinup_steps=cfg.cycling.spinup_steps,
        background_cov=parts.prior_cov,
        background_scales=BACKGROUND_SCALES,
        first_row_observed=False,
    )
