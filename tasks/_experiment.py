"""An experiment as the pipeline holds it: resolved once per process from its config file
into an immutable handle (`experiment(path)`): its config, its `vardax_core` cycle, the
store layout, its cycle axis and the places of its files."""

import dataclasses
import functools
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd

import configs
import storage
import vardax_core as vc
from configs import registry

from . import _learned as learned
from ._runtime import configure_runtime


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """Everything a cycle step needs about one experiment. Its cycle (`core`) is built with
    the handle, except for a learned method not trained yet: then on first use, which
    raises what to do (`simulate` and `train` do not need it)."""

    config_path: str
    cfg: configs.ExperimentConfig
    identity: str
    build: registry.Build
    observing: registry.ObservationLayout
    parts: registry.MethodParts
    layout: storage.StoreLayout
    axis: storage.CycleAxis
    step_seconds: int

    # --- names and places -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.cfg.experiment

    @property
    def tags(self) -> list[str]:
        return [self.cfg.experiment, self.cfg.method.label, self.cfg.model.label]

    @property
    def model(self) -> vc.AbstractForwardModel:
        return self.build.model

    @property
    def window(self) -> int:
        return self.cfg.cycling.window_steps

    @property
    def shift(self) -> int:
        """Model steps from one cycle point to the next (the window, unless they overlap)."""
        return self.cfg.cycling.steps_per_cycle

    @property
    def window_span(self) -> pd.Timedelta:
        """From a cycle point to its window's end (one interval, unless windows overlap)."""
        return pd.Timedelta(seconds=self.layout.window_offsets_s[-1])

    def osse_steps(self, n_cycles: int) -> int:
        """Model steps from the origin to the end of cycle `n_cycles − 1`'s window."""
        return self.cfg.cycling.steps_to_cover(n_cycles)

    @property
    def store_url(self) -> str:
        return self.cfg.store.url

    @property
    def storage_options(self) -> dict:
        return dict(self.cfg.store.storage_options)

    @property
    def obs_url(self) -> str:
        """The observation file (a template with `{cycle_id}` for one file per cycle); for
        a synthetic source, `observations.parquet` beside the store unless `url` is set."""
        o = self.cfg.observations
        return o.url or storage.sibling_url(self.store_url, "observations.parquet")

    @property
    def obs_storage_options(self) -> dict | None:
        """The observation file's fsspec options: `observations.storage_options`, else the
        store's for the default file beside the store."""
        o = self.cfg.observations
        if o.storage_options:
            return dict(o.storage_options)
        return (self.storage_options or None) if o.url is None else None

    @property
    def truth_url(self) -> str:
        """The OSSE nature run (written by `simulate`), beside the store."""
        return storage.sibling_url(self.store_url, "truth.zarr")

    def obs_url_for(self, cycle: storage.CyclePoint) -> str:
        return self.obs_url.replace("{cycle_id}", cycle.id)

    def cycle(self, value) -> storage.CyclePoint:
        """The cycle at a time or id on this experiment's axis (refuses one between points)."""
        return self.axis.cycle_at(value)

    def model_times(self, n_steps: int):
        """Times of model steps `0…n_steps` from the origin."""
        offsets = np.arange(n_steps + 1) * np.timedelta64(self.step_seconds, "s")
        return np.datetime64(self.axis.origin, "ns") + offsets

    def fields(self, data: dict) -> dict:
        """Store variables with the states (`background`, `analysis`, `forecast`) shaped as
        the store's state dimensions (a field's flat states as `(…, y, x)` maps)."""
        shape = self.layout.state_shape
        return {
            k: (np.reshape(v, (*np.shape(v)[:-1], *shape)) if k in _STATES else v)
            for k, v in data.items()
        }

    # --- the science ----------------------------------------------------------------------

    @functools.cached_property
    def core(self) -> vc.Cycle:
        """The `vardax_core.Cycle` (model, method, gate, background check, window, leads).
        A learned method without a usable checkpoint raises `storage.CheckpointError`
        saying how to train it."""
        return registry.build_cycle(self.build, self.parts)

    def with_cycle(self, core: vc.Cycle) -> "Experiment":
        """The same experiment run with another `vardax_core.Cycle` (a method, gate or
        background check of one's own, for the same model and observation layout)."""
        other = dataclasses.replace(self)
        other.__dict__["core"] = core  # what `core` (a cached property) returns
        return other

    def require_method(self) -> None:
        """Raises `storage.CheckpointError` (what is missing, how to train it) when the
        method cannot be built."""
        self.core  # noqa: B018 (built here, or the error raised)

    def climate_mean(self) -> np.ndarray:
        """The mean of a free model run (the cold start without a truth)."""
        return registry.climate_mean(self.build)

    def climate_states(self) -> np.ndarray:
        """States of a free model run (an ensemble's cold start without a truth)."""
        return registry.climate_states(self.build, self.core.method.members)


_STATES = (
    "background",
    "analysis",
    "forecast",
    *storage.ENSEMBLE_STATES,
    *storage.ENSEMBLE_SPREADS,
)


def build_experiment(cfg: configs.ExperimentConfig, source: str) -> Experiment:
    """The handle of a parsed config (`source`: its file, for errors). Raises
    `configs.ConfigError` naming the file and key for what the core objects refuse."""
    configure_runtime()
    axis = storage.CycleAxis.parse(cfg.cycling.origin, cfg.cycling.interval)
    interval_s, W = int(axis.interval.total_seconds()), cfg.cycling.window_steps
    per_cycle = cfg.cycling.steps_per_cycle
    if interval_s % per_cycle:
        key = "window_steps" if cfg.cycling.shift_steps is None else "shift_steps"
        raise configs.ConfigError(
            f"{source}: cycling.interval ({cfg.cycling.interval} = {interval_s} s) must split "
            f"into {key} ({per_cycle}) whole seconds"
        )
    model = registry.build_model(cfg, source)
    b = registry.Build(source, cfg, model, _cache(cfg), _loader(cfg, source))
    observing = registry.build_observations(b)
    parts = registry.build_parts(b, observing.operator)
    step = interval_s // per_cycle
    layout = storage.StoreLayout(
        state_dims=tuple(zip(model.state_dims, model.state_shape, strict=True)),
        window_offsets_s=tuple(k * step for k in range(W + 1)),
        lead_offsets_s=tuple(k * step for k in cfg.cycling.lead_steps),
        obs_size=len(observing.locations),
        obs_points=None if observing.points is None else tuple(map(tuple, observing.points)),
        obs_position_dims=observing.position_dims,
        state_coords=_coords(model),
        members=registry.ensemble_members(cfg),
    )
    if cfg.compute.member_forecasts == "dask" and not layout.members:
        raise configs.ConfigError(
            f"{source}: compute.member_forecasts: dask spreads an ensemble's members over "
            f"Dask, and method {cfg.method.label} forecasts one state (use vmap, the default)"
        )
    exp = Experiment(
        str(source), cfg, configs.identity_text(cfg), b, observing, parts, layout, axis, step
    )
    try:  # what the config asks of the method and the gate is checked now
        exp.core  # noqa: B018
    except storage.CheckpointError:  # valid, but not trained yet (simulate and train work)
        registry.build_oracle(b, parts, learned=True)
    return exp


def _coords(model: vc.AbstractForwardModel):
    """The model's coordinates for the store, when they are not its grid indices."""
    coords = [np.asarray(model.state_coords[d], float) for d in model.state_dims]
    if all(np.array_equal(c, np.arange(len(c))) for c in coords):
        return None  # the default (stores made before coordinates existed compare equal)
    return tuple(map(tuple, coords))


def _cache(cfg: configs.ExperimentConfig):
    """The registry's `cached`: arrays kept in `cache/` beside the store, as `.npy`."""
    folder, options = storage.sibling_url(cfg.store.url, "cache"), dict(cfg.store.storage_options)
    return lambda name, key, compute: storage.cached_array(
        f"{folder}/{name}-{key}.npy", compute, options
    )


def _loader(cfg: configs.ExperimentConfig, source: str):
    """The registry's `load_network`: the experiment's checkpoint, checked for its layout."""
    return lambda like: learned.load(cfg, source, like)


_resolved: dict[tuple, Experiment] = {}
_resolved_lock = threading.Lock()


def experiment(path) -> Experiment:
    """The experiment of a config file, resolved once per process (again when the file
    changes). Raises `configs.ConfigError` naming the file and key."""
    path = str(Path(path))
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise configs.ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise configs.ConfigError(f"config file {path} cannot be read: {err}") from None
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    with _resolved_lock:
        if key not in _resolved:
            _resolved[key] = build_experiment(configs.load_config(path), path)
        return _resolved[key]


def forget(path) -> None:
    """Drops the resolved experiment of a config (after training wrote its checkpoint)."""
    target = os.path.abspath(str(path))
    with _resolved_lock:
        for key in [k for k in _resolved if k[0] == target]:
            del _resolved[key]
