"""tasks: one Prefect task per cycle step, thin adapters over vardax_core and storage."""

import os as _os

# ENVIRONMENT.md: Prefect's embedded server takes 13–25 s to start here (longer than its
# default timeout) and there is no network for telemetry. Set before Prefect is imported.
_os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import jax as _jax  # noqa: E402

# The pipeline runs the core in double precision, as the stated RMSEs were measured.
_jax.config.update("jax_enable_x64", True)

# JAX's persistent compilation cache: each scheduled run is a fresh process, and a cycle in a
# new process should not recompile. VARDAX_JAX_CACHE=off turns it off.
_cache = _os.environ.get("VARDAX_JAX_CACHE", _os.path.expanduser("~/.cache/vardax-cycle/jax"))
if _cache != "off":
    _jax.config.update("jax_compilation_cache_dir", _cache)
    _jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

from ._build import build_covariance as build_covariance  # noqa: E402
from ._build import build_method as build_method  # noqa: E402
from ._build import build_model as build_model  # noqa: E402
from ._build import build_obs_operator as build_obs_operator  # noqa: E402
from ._build import osse_problem as osse_problem  # noqa: E402
from ._experiment import B_SEED as B_SEED  # noqa: E402
from ._experiment import Experiment as Experiment  # noqa: E402
from ._experiment import experiment as experiment  # noqa: E402
from ._experiment import forget as forget  # noqa: E402
from ._experiment import open_writer as open_writer  # noqa: E402
from ._experiment import writer as writer  # noqa: E402
from ._steps import CycleHalted as CycleHalted  # noqa: E402
from ._steps import analyse as analyse  # noqa: E402
from ._steps import forecast_background as forecast_background  # noqa: E402
from ._steps import forecast_product as forecast_product  # noqa: E402
from ._steps import gate as gate  # noqa: E402
from ._steps import ingest_obs as ingest_obs  # noqa: E402
from ._steps import persist as persist  # noqa: E402
from ._steps import run_block as run_block  # noqa: E402
