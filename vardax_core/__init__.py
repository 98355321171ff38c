"""vardax_core: the pure-JAX science of vardax-cycle (no I/O, no Prefect, no xarray)."""

from ._amortized import AmortizedConfig as AmortizedConfig
from ._amortized import AmortizedPosterior as AmortizedPosterior
from ._amortized import MLPObsEncoder as MLPObsEncoder
from ._amortized import RegressionHead as RegressionHead
from ._amortized import amortized_posterior as amortized_posterior
from ._amortized import gaussian_nll as gaussian_nll
from ._analysis import (
    AbstractAnalysisMethod as AbstractAnalysisMethod,
)
from ._analysis import (
    Analysis as Analysis,
)
from ._analysis import (
    AnalysisResult as AnalysisResult,
)
from ._analysis import (
    ObsWindow as ObsWindow,
)
from ._analysis import (
    innovation_operators as innovation_operators,
)
from ._analysis import innovation_solver as innovation_solver
from ._analysis import (
    obs_cost as obs_cost,
)
from ._analysis import (
    prior_cost as prior_cost,
)
from ._checks import (
    adjoint_test as adjoint_test,
)
from ._checks import (
    tangent_linear_test as tangent_linear_test,
)
from ._checks import (
    taylor_test as taylor_test,
)
from ._cov import (
    AbstractCovariance as AbstractCovariance,
)
from ._cov import (
    DenseCovariance as DenseCovariance,
)
from ._cov import (
    DiagonalCovariance as DiagonalCovariance,
)
from ._cov import (
    ScaledIdentityCovariance as ScaledIdentityCovariance,
)
from ._cov import SpectralCovariance as SpectralCovariance
from ._cov import (
    climatological_covariance as climatological_covariance,
)
from ._cov import (
    periodic_covariance as periodic_covariance,
)
from ._cycling import (
    BackgroundCheck as BackgroundCheck,
)
from ._cycling import (
    CycleOutput as CycleOutput,
)
from ._cycling import (
    accepted_trajectory as accepted_trajectory,
)
from ._cycling import (
    analysis_times as analysis_times,
)
from ._cycling import (
    cycle_scores as cycle_scores,
)
from ._cycling import (
    lead_forecasts as lead_forecasts,
)
from ._cycling import (
    run_cycles as run_cycles,
)
from ._dynamics import (
    RK4 as RK4,
)
from ._dynamics import (
    AbstractForwardModel as AbstractForwardModel,
)
from ._dynamics import (
    AbstractIntegrator as AbstractIntegrator,
)
from ._dynamics import (
    Diffrax as Diffrax,
)
from ._dynamics import (
    Lorenz63 as Lorenz63,
)
from ._dynamics import (
    Lorenz96 as Lorenz96,
)
from ._dynamics import (
    Lorenz96TwoLevel as Lorenz96TwoLevel,
)
from ._gates import Gate as Gate
from ._gates import GateReport as GateReport
from ._learned import GRADIENT_MODES as GRADIENT_MODES
from ._learned import AbstractPrior as AbstractPrior
from ._learned import Batch1D as Batch1D
from ._learned import Batch2D as Batch2D
from ._learned import Batch2DMultivar as Batch2DMultivar
from ._learned import BilinAEPrior as BilinAEPrior
from ._learned import BilinAEPrior1D as BilinAEPrior1D
from ._learned import BilinAEPrior2D as BilinAEPrior2D
from ._learned import BilinAEPrior2DMultivar as BilinAEPrior2DMultivar
from ._learned import ConvAEPrior1D as ConvAEPrior1D
from ._learned import ConvLSTM as ConvLSTM
from ._learned import FourDVarNet as FourDVarNet
from ._learned import FourDVarNet1D as FourDVarNet1D
from ._learned import FourDVarNet2D as FourDVarNet2D
from ._learned import IdentityPrior as IdentityPrior
from ._learned import MLPAEPrior1D as MLPAEPrior1D
from ._learned import OneStepAdjoint as OneStepAdjoint
from ._learned_methods import AmortizedMethod as AmortizedMethod
from ._learned_methods import FourDVarNetMethod as FourDVarNetMethod
from ._methods import (
    IncrementalFourDVar as IncrementalFourDVar,
)
from ._methods import (
    OptimalInterpolation as OptimalInterpolation,
)
from ._methods import (
    StrongFourDVar as StrongFourDVar,
)
from ._methods import (
    ThreeDVar as ThreeDVar,
)
from ._methods import (
    WeakFourDVar as WeakFourDVar,
)
from ._metrics import (
    assim_forecast_rmse as assim_forecast_rmse,
)
from ._metrics import (
    block_rmse as block_rmse,
)
from ._metrics import (
    rmse as rmse,
)
from ._metrics import (
    rmse_t as rmse_t,
)
from ._obs import (
    AbstractObsOperator as AbstractObsOperator,
)
from ._obs import BilinearObs as BilinearObs
from ._obs import (
    LinearObs as LinearObs,
)
from ._obs import (
    NonlinearObs as NonlinearObs,
)
from ._obs import (
    SubsetObs as SubsetObs,
)
from ._obs import gridded_points as gridded_points
from ._obs import station_points as station_points
from ._obs import swath_points as swath_points
from ._obs import swath_schedule as swath_schedule
from ._posterior import LaplacePosterior as LaplacePosterior
from ._posterior import PosteriorAgreement as PosteriorAgreement
from ._posterior import SBCReport as SBCReport
from ._posterior import default_statistics as default_statistics
from ._posterior import heldout_scores as heldout_scores
from ._posterior import laplace_posterior as laplace_posterior
from ._posterior import rank_uniformity as rank_uniformity
from ._posterior import simulation_based_calibration as simulation_based_calibration
from ._problems import (
    CycledProblem as CycledProblem,
)
from ._problems import (
    WindowProblem as WindowProblem,
)
from ._problems import (
    cycled_problem as cycled_problem,
)
from ._problems import (
    l63_window_problem as l63_window_problem,
)
from ._problems import (
    l96_two_level_window_problem as l96_two_level_window_problem,
)
from ._problems import (
    l96_window_problem as l96_window_problem,
)
from ._problems import (
    nature_run as nature_run,
)
from ._problems import (
    observe as observe,
)
from ._problems import perturbed_ensemble as perturbed_ensemble
from ._qg import QuasiGeostrophic as QuasiGeostrophic
from ._training import amortized_eval_step as amortized_eval_step
from ._training import amortized_loss as amortized_loss
from ._training import amortized_train_step as amortized_train_step
from ._training import eval_step as eval_step
from ._training import fit as fit
from ._training import fourdvarnet_loss as fourdvarnet_loss
from ._training import simulate_windows as simulate_windows
from ._training import train_step as train_step

__version__ = "0.1.0"
