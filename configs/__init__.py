"""configs: the experiment YAML files and the pydantic models that parse them."""

from ._load import ConfigError as ConfigError
from ._load import canonical_text as canonical_text
from ._load import identity_text as identity_text
from ._load import layout_hash as layout_hash
from ._load import learned_layout as learned_layout
from ._load import load_config as load_config
from ._load import load_sweep as load_sweep
from ._load import parse_config as parse_config
from ._models import LEARNED_METHODS as LEARNED_METHODS
from ._models import CovarianceConfig as CovarianceConfig
from ._models import CyclingConfig as CyclingConfig
from ._models import DaskConfig as DaskConfig
from ._models import ExperimentConfig as ExperimentConfig
from ._models import GateConfig as GateConfig
from ._models import Lorenz63Config as Lorenz63Config
from ._models import Lorenz96Config as Lorenz96Config
from ._models import Lorenz96TwoLevelConfig as Lorenz96TwoLevelConfig
from ._models import MethodConfig as MethodConfig
from ._models import NetworkConfig as NetworkConfig
from ._models import ObservationsConfig as ObservationsConfig
from ._models import OracleConfig as OracleConfig
from ._models import StoreConfig as StoreConfig
from ._models import SweepConfig as SweepConfig
from ._models import TrainingConfig as TrainingConfig
