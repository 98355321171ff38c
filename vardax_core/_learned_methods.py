"""The learned methods in the analysis-step protocol: `method(background, obs) -> Analysis`,
so a config can put FourDVarNet or the amortized posterior in the cycle like any other."""

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from ._amortized import AmortizedPosterior
from ._analysis import (
    AbstractAnalysisMethod,
    Analysis,
    AnalysisResult,
    ObsWindow,
    obs_cost,
    prior_cost,
)
from ._cov import AbstractCovariance
from ._learned import FourDVarNet
from ._obs import AbstractObsOperator


def _check_window(name, background, n_time, obs=None):
    if obs is not None and obs.operator is not None:
        raise ValueError(
            f"{name}: the network learned one fixed observation layout; a window with its own "
            "operators (observations at positions) needs a classical method"
        )
    if background.shape[0] != n_time:
        raise ValueError(
            f"{name}: the network was built for windows of {n_time} times, the background has "
            f"{background.shape[0]} (a checkpoint for another cycling.window_steps?)"
        )


def _diagnostics(method, background, trajectory, obs, iterations):
    def cost(traj):
        return prior_cost(method.prior_cov, traj[0] - background[0]) + obs_cost(
            method.obs_operator, method.obs_cov, traj, obs
        )

    # a network has no convergence to report; what it can get wrong is a non-finite output
    finite = jnp.all(jnp.isfinite(trajectory))
    return Analysis(
        trajectory=trajectory,
        cost_before=cost(background),
        cost_after=cost(trajectory),
        iterations=jnp.asarray(iterations),
        result=AnalysisResult.where(
            finite, AnalysisResult.successful, AnalysisResult.nonfinite_analysis
        ),
    )


class FourDVarNetMethod(AbstractAnalysisMethod):
    """FourDVarNet as an analysis step: the background is the solver's first guess and the
    observations enter through `obs_operator`. `prior_cov` and `obs_cov` only score the
    analysis (`cost_before`/`cost_after`: the 4DVar cost) and serve the gate."""

    net: FourDVarNet
    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    learned: ClassVar[bool] = True

    def __check_init__(self):
        self._check_config()

    @property
    def state_size(self) -> int:
        return math.prod(self.net.state_shape[1:])

    def _analyse(self, background, obs: ObsWindow) -> Analysis:
        _check_window(type(self).__name__, background, self.net.state_shape[0], obs)
        xb = background.reshape(self.net.state_shape)
        x = self.net.solve(obs.values, obs.mask, xb, self.obs_operator)
        trajectory = x.reshape(background.shape).astype(background.dtype)
        return _diagnostics(self, background, trajectory, obs, self.net.n_solver_steps)


class AmortizedMethod(AbstractAnalysisMethod):
    """The amortized posterior's mean as an analysis step (one forward pass);
    `posterior_std(background, obs)` gives its spread."""

    post: AmortizedPosterior
    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    learned: ClassVar[bool] = True
    samples_posterior: ClassVar[bool] = True

    def __check_init__(self):
        self._check_config()

    @property
    def state_size(self) -> int:
        return math.prod(self.post.head.state_shape[1:])

    def _posterior(self, background, obs):
        _check_window(type(self).__name__, background, self.post.head.state_shape[0], obs)
        bg = background if self.post.use_background else None
        return self.post.posterior_one(obs.values, obs.mask, bg)

    def posterior_std(self, background, obs: ObsWindow):
        return self._posterior(jnp.asarray(background), obs)[1]

    def _analyse(self, background, obs: ObsWindow) -> Analysis:
        mean, _ = self._posterior(background, obs)
        trajectory = jax.lax.stop_gradient(mean).astype(background.dtype)
        return _diagnostics(self, background, trajectory, obs, 0)
