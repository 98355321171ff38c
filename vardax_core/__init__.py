"""vardax_core: the pure-JAX science of vardax-cycle (no I/O, no Prefect, no xarray)."""

from ._analysis import (
    AbstractAnalysisMethod as AbstractAnalysisMethod,
    Analysis as Analysis,
    AnalysisResult as AnalysisResult,
    ObsWindow as ObsWindow,
    obs_cost as obs_cost,
    prior_cost as prior_cost,
)
from ._checks import (
    adjoint_test as adjoint_test,
    tangent_linear_test as tangent_linear_test,
    taylor_test as taylor_test,
)
from ._cov import (
    AbstractCovariance as AbstractCovariance,
    DenseCovariance as DenseCovariance,
    DiagonalCovariance as DiagonalCovariance,
    ScaledIdentityCovariance as ScaledIdentityCovariance,
    climatological_covariance as climatological_covariance,
    periodic_covariance as periodic_covariance,
)
from ._cycling import (
    CycleOutput as CycleOutput,
    analysis_times as analysis_times,
    run_cycles as run_cycles,
)
from ._dynamics import (
    RK4 as RK4,
    AbstractForwardModel as AbstractForwardModel,
    AbstractIntegrator as AbstractIntegrator,
    Diffrax as Diffrax,
    Lorenz63 as Lorenz63,
    Lorenz96 as Lorenz96,
    Lorenz96TwoLevel as Lorenz96TwoLevel,
)
from ._methods import (
    IncrementalFourDVar as IncrementalFourDVar,
    OptimalInterpolation as OptimalInterpolation,
    StrongFourDVar as StrongFourDVar,
    ThreeDVar as ThreeDVar,
    WeakFourDVar as WeakFourDVar,
)
from ._metrics import (
    assim_forecast_rmse as assim_forecast_rmse,
    block_rmse as block_rmse,
    rmse as rmse,
    rmse_t as rmse_t,
)
from ._obs import (
    AbstractObsOperator as AbstractObsOperator,
    LinearObs as LinearObs,
    NonlinearObs as NonlinearObs,
    SubsetObs as SubsetObs,
)
from ._problems import (
    CycledProblem as CycledProblem,
    WindowProblem as WindowProblem,
    cycled_problem as cycled_problem,
    l63_window_problem as l63_window_problem,
    l96_two_level_window_problem as l96_two_level_window_problem,
    l96_window_problem as l96_window_problem,
    nature_run as nature_run,
    observe as observe,
)

__version__ = "0.1.0"
