"""An experiment as the tasks see it: its config, its `vardax_core` objects, the jitted
functions of the cycle's steps, the store layout and the paths of its files.

Built once per process and config file (`experiment(path)`), so every cycle of a run
reuses the same compiled functions. No numerics here: the steps call `vardax_core`.
"""

import contextlib
import functools
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import configs
import storage
import vardax_core as vc

from . import _learned as learned
from ._build import build_covariances, build_method, build_model, build_obs_operator

B_SEED = 1
"""Seed of the free run a climatological B is estimated from (not the OSSE truth's)."""


@dataclass(frozen=True, eq=False)
class Experiment:
    """Everything a cycle step needs about one experiment (built by `experiment(path)`)."""

    config_path: str
    cfg: configs.ExperimentConfig
    config_text: str
    model: vc.AbstractForwardModel
    obs_operator: vc.AbstractObsOperator
    method: vc.AbstractAnalysisMethod  # or `MissingCheckpoint` for an untrained learned one
    gate: vc.Gate
    check: vc.BackgroundCheck
    layout: storage.StoreLayout
    axis: storage.CycleAxis
    locations: tuple[int, ...]
    step_seconds: int

    # --- names and paths --------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.cfg.experiment

    @property
    def tags(self) -> list[str]:
        return [self.cfg.experiment, self.cfg.method.name, self.cfg.model.name]

    @property
    def window(self) -> int:
        return self.cfg.cycling.window_steps

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
    def truth_url(self) -> str:
        """The OSSE nature run (written by `simulate`), beside the store."""
        return storage.sibling_url(self.store_url, "truth.zarr")

    def obs_url_for(self, point) -> str:
        return self.obs_url.replace("{cycle_id}", storage.cycle_id(storage.parse_time(point)))

    def point(self, value):
        """A cycle point on this experiment's axis (refuses one between cycle points)."""
        p = storage.parse_time(value)
        self.axis.index(p)
        return p

    def model_times(self, n_steps: int):
        """Times of model steps `0…n_steps` from the origin."""
        import pandas as pd

        return self.axis.origin + pd.to_timedelta(np.arange(n_steps + 1) * self.step_seconds, "s")

    def fields(self, data: dict) -> dict:
        """Store variables with the states (`background`, `analysis`, `forecast`) shaped as
        the store's state dimensions (a 2-D model's flat states as `(…, y, x)` maps)."""
        shape = self.layout.state_shape
        return {
            k: (np.reshape(v, (*np.shape(v)[:-1], *shape)) if k in _STATES else v)
            for k, v in data.items()
        }

    # --- the compiled steps -----------------------------------------------------------

    def forecast(self, x, steps: int):
        """`(steps+1, n)` model trajectory from `x` (step 2: the background)."""
        return np.asarray(_rollout(self.model, jnp.asarray(x), steps))

    def require_method(self) -> None:
        """Raises `storage.CheckpointError` (what is missing and how to train it) when the
        learned method has no usable checkpoint."""
        if isinstance(self.method, learned.MissingCheckpoint):
            raise storage.CheckpointError(self.method.message)

    def analyse(self, background, values, mask) -> tuple[vc.Analysis, np.ndarray]:
        """Step 3: the background check, then the method. **Returns** the analysis and the
        mask of the observations it assimilated."""
        self.require_method()
        return _analyse(self.check, self.method, jnp.asarray(background), values, mask)

    def judge(self, background, analysis, values, mask):
        """Step 4: the gate's report and the trajectory the cycle hands on."""
        return _judge(self.gate, jnp.asarray(background), analysis, values, mask)

    def ensemble_initial(self, x, members: int, std: float, seed: int = 0) -> np.ndarray:
        """`(members, n)` initial states around `x` (member 0 is `x` itself)."""
        states = vc.perturbed_ensemble(
            self.model, jnp.asarray(x), jax.random.PRNGKey(seed), members, std
        )
        return np.asarray(states)

    def product(self, x_end):
        """Step 6: the forecast at the configured lead steps after the window end."""
        leads = tuple(self.cfg.cycling.lead_steps)
        return np.asarray(_product(self.model, jnp.asarray(x_end), leads))

    def run_block(self, x_start, values, mask, n_cycles: int):
        """Block mode: `n_cycles` back-to-back cycles in one `lax.scan` (gate and background
        check inside); **returns** `(CycleOutput, product forecasts)`."""
        self.require_method()
        return _block(
            self.model,
            self.method,
            self.gate,
            self.check,
            jnp.asarray(x_start),
            values,
            mask,
            n_cycles,
            self.window,
            tuple(self.cfg.cycling.lead_steps),
        )

    def cold_start(self):
        """The first cycle's starting state: the OSSE's first guess (written by `simulate`)
        for a synthetic source, else the mean of a free model run (climatology)."""
        if self.cfg.observations.source == "synthetic":
            try:
                truth = storage.read_nature_run(
                    self.truth_url, storage_options=self.storage_options, variable="first_guess"
                )
            except storage.ObservationError:
                raise storage.ObservationError(
                    f"experiment {self.name}: no OSSE at {self.truth_url} (its first guess and "
                    f"observations): run `vardax-cycle simulate {self.config_path}` first"
                ) from None
            return np.reshape(truth.values, -1)
        climate = vc.nature_run(self.model, jax.random.PRNGKey(B_SEED), 2000, 1000)
        return np.asarray(jnp.mean(climate, axis=0))


@eqx.filter_jit
def _rollout(model, x, steps):
    return model.rollout(x, steps)


@eqx.filter_jit
def _analyse(check, method, background, values, mask):
    obs = check(background, vc.ObsWindow(values, mask))
    return method(background, obs), obs.mask


@eqx.filter_jit
def _judge(gate, background, analysis, values, mask):
    obs = vc.ObsWindow(values, mask)
    report = gate(background, analysis, obs)
    return report, vc.accepted_trajectory(background, analysis, obs, report)


_product = eqx.filter_jit(vc.lead_forecasts)


@eqx.filter_jit
def _block(model, method, gate, check, x_start, values, mask, n_cycles, window, leads):
    out = vc.run_cycles(
        model, method, x_start, vc.ObsWindow(values, mask), n_cycles, window, gate=gate, check=check
    )
    products = jax.vmap(lambda x: vc.lead_forecasts(model, x, leads))(out.accepted[:, -1])
    return out, products


_STATES = ("background", "analysis", "forecast")


def _state_dims(cfg, model) -> tuple[tuple[str, int], ...]:
    if hasattr(model, "grid_shape"):  # a 2-D field, stored as maps
        return tuple(zip(("y", "x"), model.grid_shape, strict=True))
    return (("component" if cfg.model.name == "lorenz63" else "site", model.state_size),)


def _build(path: str) -> Experiment:
    cfg = configs.load_config(path)
    model = build_model(cfg.model)
    H = build_obs_operator(cfg, model)
    B, R = build_covariances(cfg, model, H, seed=B_SEED)
    if cfg.method.learned:
        try:
            net, _ = learned.load(cfg, path, model, H)
            method = learned.as_method(cfg, net, H, B, R)
        except storage.CheckpointError as err:  # `simulate` and `train` need no network
            method = learned.MissingCheckpoint(str(err))
    else:
        method = build_method(cfg, model, H, seed=B_SEED)
    axis = storage.CycleAxis.parse(cfg.cycling.origin, cfg.cycling.interval)
    interval_s = int(axis.interval.total_seconds())
    W = cfg.cycling.window_steps
    if interval_s % W:
        raise configs.ConfigError(
            f"{path}: cycling.interval ({cfg.cycling.interval} = {interval_s} s) must split into "
            f"window_steps ({W}) whole seconds"
        )
    step = interval_s // W
    obs_cfg = cfg.observations
    gate = vc.Gate(
        H,
        B,
        R,
        chi2_dof_bounds=tuple(cfg.gates.chi2_dof),
        increment_sigma=cfg.gates.increment_sigma,
        increment_at="all" if cfg.method.name in ("oi", "3dvar") else "start",
        oracle=learned.oracle(cfg, model, H, B, R),
        oracle_fallback=learned.oracle_fallback(cfg),
    )
    check = vc.BackgroundCheck(
        H, obs_cfg.error_std, obs_cfg.qc.background_std, obs_cfg.qc.gross_error_k
    )
    locations = (
        tuple(range(H.obs_size))  # a network's points, numbered
        if obs_cfg.network is not None
        else tuple(obs_cfg.location_indices(model.state_size))
    )
    layout = storage.StoreLayout(
        state_dims=_state_dims(cfg, model),
        window_offsets_s=tuple(k * step for k in range(W + 1)),
        lead_offsets_s=tuple(k * step for k in cfg.cycling.lead_steps),
        obs_size=len(locations),
        obs_points=(
            tuple(map(tuple, np.asarray(H.points).tolist()))
            if obs_cfg.network is not None
            else None
        ),
    )
    return Experiment(
        config_path=str(path),
        cfg=cfg,
        config_text=configs.identity_text(cfg),
        model=model,
        obs_operator=H,
        method=method,
        gate=gate,
        check=check,
        layout=layout,
        axis=axis,
        locations=locations,
        step_seconds=step,
    )


_cache: dict[tuple, Experiment] = {}
_cache_lock = threading.Lock()


def forget(path) -> None:
    """Drops the cached experiment of a config (after training wrote its checkpoint)."""
    target = os.path.abspath(str(path))
    with _cache_lock:
        for key in [k for k in _cache if k[0] == target]:
            del _cache[key]


def experiment(path) -> Experiment:
    """The experiment of a config file, built once per process (and rebuilt when the file
    changes). Raises `configs.ConfigError` naming the file and key."""
    path = str(Path(path))
    try:
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        raise configs.ConfigError(f"config file not found: {path}") from None
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _build(path)
        return _cache[key]


# --- the run's writer ------------------------------------------------------------------

_writers: dict[str, storage.CycleStore] = {}


@contextlib.contextmanager
def open_writer(exp: Experiment):
    """Opens (or creates) the experiment's store as its writer for a run; the steps of the
    run's cycles find it with `writer(exp)`. The lock is released on exit."""
    store = storage.CycleStore.open_or_create(
        exp.store_url,
        exp.layout,
        exp.cfg.cycling.origin,
        exp.cfg.cycling.interval,
        experiment=exp.name,
        config_text=exp.config_text,
        storage_options=exp.storage_options,
        block=exp.cfg.store.block,
        field_chunk=exp.cfg.store.field_chunk,
    )
    _writers[exp.store_url] = store
    try:
        yield store
    finally:
        _writers.pop(exp.store_url, None)
        store.close()


def writer(exp: Experiment) -> storage.CycleStore:
    try:
        return _writers[exp.store_url]
    except KeyError:
        raise storage.StoreError(
            f"no writer is open for {exp.store_url}: run cycles through flows.run_cycles"
        ) from None


@functools.lru_cache(maxsize=8)
def _observation_table(url: str, fmt, options_key, stamp):
    del stamp  # part of the cache key only
    return storage.read_observation_table(url, format=fmt, storage_options=json.loads(options_key))


def observation_table(exp: Experiment, url: str):
    """The observation file as a table, read once per version of a local file."""
    fmt = exp.cfg.observations.format
    # a hashable key, nested options (`client_kwargs`) included
    options = json.dumps(exp.cfg.observations.storage_options, sort_keys=True)
    stamp = None
    if "://" not in url or url.startswith("file://"):
        try:
            st = os.stat(url.removeprefix("file://"))
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            raise storage.ObservationError(f"observation file not found: {url}") from None
    else:
        _observation_table.cache_clear()
    return _observation_table(url, fmt, options, stamp)
