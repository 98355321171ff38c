"""tasks: one Prefect task per cycle step, thin adapters over vardax_core and storage."""

from ._build import build_covariance as build_covariance
from ._build import build_method as build_method
from ._build import build_model as build_model
from ._build import build_obs_operator as build_obs_operator
from ._build import osse_problem as osse_problem
