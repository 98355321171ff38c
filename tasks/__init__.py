"""tasks: the cycle's steps as Prefect tasks, thin adapters between `vardax_core` (the
science) and `storage` (the store and the observation files), and the one registry from
config classes to core objects."""

# Names resolve on first use (PEP 562), so a command that only reads a config or a store
# does not import Prefect (the steps are Prefect tasks) or the solvers.
import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "run_block": "._block",
    "ensemble_initial": "._ensemble",
    "forecast_member": "._ensemble",
    "write_ensemble": "._ensemble",
    "Experiment": "._experiment",
    "build_experiment": "._experiment",
    "experiment": "._experiment",
    "forget": "._experiment",
    "Observations": "._observations",
    "read_observations": "._observations",
    "check_lineage": "._observations",
    "osse_cycles": "._osse",
    "osse_problem": "._osse",
    "refuse_replacing": "._osse",
    "write_osse": "._osse",
    "CycleHalted": "._run",
    "MemberForecastError": "._members",
    "MemberPool": "._members",
    "all_done": "._run",
    "checked_store": "._run",
    "Run": "._run",
    "open_run": "._run",
    "open_store": "._run",
    "configure_runtime": "._runtime",
    "ReportData": "._scores",
    "reference_scores": "._scores",
    "report_data": "._scores",
    "store_scores": "._scores",
    "analyse": "._steps",
    "forecast_background": "._steps",
    "forecast_product": "._steps",
    "gate": "._steps",
    "ingest_obs": "._steps",
    "persist": "._steps",
    "evaluate": "._train",
    "simulate_windows": "._train",
    "train_network": "._train",
    "training_reporter": "._train",
    "write_checkpoint": "._train",
}

if TYPE_CHECKING:
    from ._block import run_block as run_block
    from ._ensemble import ensemble_initial as ensemble_initial
    from ._ensemble import forecast_member as forecast_member
    from ._ensemble import write_ensemble as write_ensemble
    from ._experiment import Experiment as Experiment
    from ._experiment import build_experiment as build_experiment
    from ._experiment import experiment as experiment
    from ._experiment import forget as forget
    from ._members import MemberForecastError as MemberForecastError
    from ._members import MemberPool as MemberPool
    from ._observations import Observations as Observations
    from ._observations import check_lineage as check_lineage
    from ._observations import read_observations as read_observations
    from ._osse import osse_cycles as osse_cycles
    from ._osse import osse_problem as osse_problem
    from ._osse import refuse_replacing as refuse_replacing
    from ._osse import write_osse as write_osse
    from ._run import CycleHalted as CycleHalted
    from ._run import Run as Run
    from ._run import all_done as all_done
    from ._run import checked_store as checked_store
    from ._run import open_run as open_run
    from ._run import open_store as open_store
    from ._runtime import configure_runtime as configure_runtime
    from ._scores import ReportData as ReportData
    from ._scores import reference_scores as reference_scores
    from ._scores import report_data as report_data
    from ._scores import store_scores as store_scores
    from ._steps import analyse as analyse
    from ._steps import forecast_background as forecast_background
    from ._steps import forecast_product as forecast_product
    from ._steps import gate as gate
    from ._steps import ingest_obs as ingest_obs
    from ._steps import persist as persist
    from ._train import evaluate as evaluate
    from ._train import simulate_windows as simulate_windows
    from ._train import train_network as train_network
    from ._train import training_reporter as training_reporter
    from ._train import write_checkpoint as write_checkpoint


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = sorted(_WHERE)
