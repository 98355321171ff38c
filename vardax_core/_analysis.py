"""The analysis-step protocol shared by every method, and the variational costs.

A method takes the background over the window (`(T+1, n)`, from the previous analysis's
forecast) and the window's observations (`ObsWindow`, `(T+1, m)` values and mask) and
returns an `Analysis`. Numerical failure is a result code, never an exception, so the
cycle can gate it; shape and configuration mistakes raise `ValueError` at trace time.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from ._cov import AbstractCovariance
from ._obs import AbstractObsOperator


class AnalysisResult(eqx.Enumeration):
    """Outcome of an analysis step."""

    successful = ""
    max_steps_reached = "The minimiser reached its step limit before converging."
    minimiser_failed = "The minimiser failed (divergence, non-finite values or breakdown)."
    nonfinite_background = "The background contains non-finite values: analysis = background."
    nonfinite_analysis = "The analysis contains non-finite values."
    no_observations = "No observations in the window: analysis = background."
    singular = "The innovation covariance H B Hᵀ + R is singular: its solve failed."


RESULT_NAMES: tuple[str, ...] = tuple(AnalysisResult._name_to_item)
"""The names of the `AnalysisResult` codes, by code (what a store's `result_code` holds;
new results are appended, so stored codes keep their meaning)."""


def result_code(result: AnalysisResult) -> jax.Array:
    """The integer code of a result (batched results give an array of codes)."""
    return jnp.asarray(result._value)


def result_name(code) -> str:
    """The name of a result code (`-1`: no analysis was run, a forecast-only cycle)."""
    code = int(code)
    return "not_run" if code < 0 else RESULT_NAMES[code]


def result_message(code) -> str:
    """What a result code means, in words (`""` for `successful`)."""
    code = int(code)
    if code < 0:
        return "No analysis was run (a forecast-only cycle)."
    return AnalysisResult[getattr(AnalysisResult, RESULT_NAMES[code])]


def _from_lineax(result: lx.RESULTS) -> AnalysisResult:
    """A linear solve's result as an analysis result: a failed solve of the innovation
    covariance is `singular`, an iterative one out of steps `max_steps_reached`."""
    return AnalysisResult.where(
        result == lx.RESULTS.successful,
        AnalysisResult.successful,
        AnalysisResult.where(
            result == lx.RESULTS.max_steps_reached,
            AnalysisResult.max_steps_reached,
            AnalysisResult.singular,
        ),
    )


def _from_optx(result: optx.RESULTS) -> AnalysisResult:
    return AnalysisResult.where(
        result == optx.RESULTS.successful,
        AnalysisResult.successful,
        AnalysisResult.where(
            (result == optx.RESULTS.max_steps_reached)
            | (result == optx.RESULTS.nonlinear_max_steps_reached),
            AnalysisResult.max_steps_reached,
            AnalysisResult.minimiser_failed,
        ),
    )


class ObsWindow(eqx.Module):
    """The observations of one assimilation window.

    **Arguments:**
    - `values`: `(T+1, m)`; row `k` is valid at window time `k·dt` (row 0 = window start).
      Entries where `mask` is false are ignored (they may be NaN).
    - `mask`: `(T+1, m)` booleans, true where an observation exists.
    - `error_std`: `(T+1, m)` each observation's error standard deviation, so that `R` at
      each time is `diag(error_std²)`; `None` (default): the method's own `obs_cov`.
    - `operator`: the window's own observation operators, one per window time, as one
      operator whose array leaves have the `T+1` window times as their leading axis
      (observations at positions that change from time to time, `InterpolationObs.at`);
      `None` (default): the method's own `obs_operator` at every time.

    Every array leaf of an `ObsWindow` has the window's time as its leading axis, so a
    slice of rows (`rows`) is a window too. `map_times` applies `H_t` and `R_t`.
    """

    values: jax.Array
    mask: jax.Array
    error_std: jax.Array | None = None
    operator: AbstractObsOperator | None = None

    def __init__(self, values, mask=None, error_std=None, operator=None):
        values = jnp.asarray(values)
        if mask is None:  # what is there: a finite value (with a finite, positive error)
            mask = jnp.isfinite(values)
            if error_std is not None:
                sigma = jnp.asarray(error_std)
                mask = mask & jnp.isfinite(sigma) & (sigma > 0)
        mask = jnp.asarray(mask).astype(bool)
        if values.ndim != 2:
            raise ValueError(f"ObsWindow: values must be (time, m), got shape {values.shape}")
        if mask.shape != values.shape:
            raise ValueError(
                f"ObsWindow: mask shape {mask.shape} does not match values shape {values.shape}"
            )
        if error_std is not None:
            error_std = jnp.asarray(error_std, values.dtype)
            if error_std.shape != values.shape:
                raise ValueError(
                    f"ObsWindow: error_std shape {error_std.shape} does not match values "
                    f"shape {values.shape}"
                )
            # an entry that is not assimilated has a harmless error (1), never NaN or 0
            error_std = jnp.where(mask, error_std, 1.0)
        if operator is not None:
            leaves = jax.tree_util.tree_leaves(eqx.filter(operator, eqx.is_array))
            if any(jnp.ndim(a) < 1 or jnp.shape(a)[0] != values.shape[0] for a in leaves):
                raise ValueError(
                    "ObsWindow: operator must be batched over the window's "
                    f"{values.shape[0]} times (each array leaf's leading axis)"
                )
            if operator.obs_size != values.shape[1]:
                raise ValueError(
                    f"ObsWindow: operator returns {operator.obs_size} observations, the "
                    f"window has {values.shape[1]} per time"
                )
        self.mask = mask
        self.values = jnp.where(mask, values, 0.0)
        self.error_std = error_std
        self.operator = operator

    @property
    def n_times(self) -> int:
        return self.values.shape[-2]

    @property
    def obs_size(self) -> int:
        return self.values.shape[-1]

    def take(self, rows: tuple[int, ...]) -> "ObsWindow":
        """The window of the (static) `rows` only: the times that can hold observations."""
        index = jnp.asarray(rows, int)
        return jax.tree_util.tree_map(lambda a: a[index] if eqx.is_array(a) else a, self)

    def rows(self, start, length: int) -> "ObsWindow":
        """The window of rows `start … start + length − 1` (`start` may be traced)."""
        return jax.tree_util.tree_map(
            lambda a: jax.lax.dynamic_slice_in_dim(a, start, length) if eqx.is_array(a) else a,
            self,
        )


def map_times(fn, obs: ObsWindow, obs_operator: AbstractObsOperator, obs_cov, *per_time):
    """`fn(H_t, R_t, *args_t)` at every window time, vectorised: `H_t` is the window's own
    operator at time `t` (`obs.operator`) or else `obs_operator`; `R_t` is
    `diag(obs.error_std[t]²)` when the window carries its errors, else `obs_cov`; each of
    `per_time` is an array with the window times as its leading axis."""
    from ._cov import DiagonalCovariance

    H, h_axis = obs_operator, None
    if obs.operator is not None:  # batched array leaves; anything else is shared
        H, h_axis = (
            obs.operator,
            jax.tree_util.tree_map(lambda a: 0 if eqx.is_array(a) else None, obs.operator),
        )
    sigma, s_axis = (None, None) if obs.error_std is None else (obs.error_std, 0)

    def at_time(H_t, sigma_t, *args):
        R_t = obs_cov if sigma_t is None else DiagonalCovariance(sigma_t**2)
        return fn(H_t, R_t, *args)

    in_axes = (h_axis, s_axis) + (0,) * len(per_time)
    return jax.vmap(at_time, in_axes=in_axes)(H, sigma, *per_time)


def predicted_obs(obs_operator: AbstractObsOperator, states, obs: ObsWindow) -> jax.Array:
    """`H_t(x_t)` at every window time `(T+1, m)` (the window's operators, if it has them)."""
    return map_times(lambda H, R, x: H(x), obs, obs_operator, None, states)


class Analysis(eqx.Module):
    """What an analysis step returns.

    **Fields:**
    - `trajectory`: `(T+1, n)` analysed states over the window.
    - `cost_before`, `cost_after`: the method's cost at the background and at the analysis.
    - `iterations`: minimiser steps (outer loops for incremental 4DVar; 0 for OI).
    - `result`: an `AnalysisResult`.
    - `model_error`: `(T, n)` estimated model errors `η` (weak-constraint 4DVar), else `None`.
    - `ensemble`: `(N, T+1, n)` the analysis ensemble over the window (ensemble methods,
      whose `trajectory` is its mean), else `None`.
    """

    trajectory: jax.Array
    cost_before: jax.Array
    cost_after: jax.Array
    iterations: jax.Array
    result: AnalysisResult
    model_error: jax.Array | None = None
    ensemble: jax.Array | None = None

    @property
    def initial(self) -> jax.Array:
        """The analysis at the window start."""
        return self.trajectory[0]

    @property
    def final(self) -> jax.Array:
        """The analysis at the window end (the start of the next window's forecast)."""
        return self.trajectory[-1]


def obs_cost(
    obs_operator: AbstractObsOperator, obs_cov: AbstractCovariance, states, obs: ObsWindow
) -> jax.Array:
    """$\\tfrac12 \\sum_t \\|y_t − H_t(x_t)\\|^2_{R_t^{-1}}$ over the observed entries."""

    def at_time(H, R, x, y, mask):
        return R.masked_inv_quad(jnp.where(mask, y - H(x), 0.0), mask)

    costs = map_times(at_time, obs, obs_operator, obs_cov, states, obs.values, obs.mask)
    return 0.5 * jnp.sum(costs)


def innovation_operators(
    obs_operator: AbstractObsOperator,
    prior_cov: AbstractCovariance,
    obs_cov: AbstractCovariance,
    x,
    mask,
):
    """At one time: `H` (linearised at `x`), `B`, the 0/1 mask `M`, and the innovation
    covariance `S = M H B Hᵀ M + (M R M + I − M)` (tagged SPD) — whose solve with a masked
    innovation is the solve with `H B Hᵀ + R` on the observed rows only."""
    H = obs_operator.linearise(x)
    B = prior_cov.as_operator()
    M = lx.DiagonalLinearOperator(mask.astype(x.dtype))
    S = lx.TaggedLinearOperator(
        M @ H @ B @ H.T @ M + obs_cov.masked_operator(mask),
        (lx.symmetric_tag, lx.positive_semidefinite_tag),
    )
    return H, B, M, S


def innovation_solver(prior_cov: AbstractCovariance, obs_size: int) -> lx.AbstractLinearSolver:
    """How to solve with `S`: Cholesky on its matrix, or conjugate gradients when `B` is
    matrix-free (forming `S` would take one product with `B` per observation)."""
    if prior_cov.matrix_free:
        return lx.CG(rtol=1e-10, atol=1e-12, max_steps=10 * obs_size)
    return lx.AutoLinearSolver(well_posed=True)


def prior_cost(prior_cov: AbstractCovariance, increment) -> jax.Array:
    """$\\tfrac12 \\|δx\\|^2_{B^{-1}}$."""
    return 0.5 * prior_cov.inv_quad(increment)


class AbstractAnalysisMethod(eqx.Module):
    """An analysis step: `method(background, obs) -> Analysis`.

    Checks shapes (ValueError naming the argument), and returns the background with a
    result code when the background is not finite or the window has no observations.

    Capabilities, asked by the cycle and the pipeline (never a method's name):
    - `four_dimensional`: the control variable is the window's initial state (4DVar and
      its kin), so the gate measures increments at the window start, where `B` describes
      the background error; a 3D method analyses every window time on its own.
    - `learned`: its parameters come from training (a checkpoint), not from the config.
    - `samples_posterior`: it gives a posterior distribution to sample (calibration checks
      apply), not only an estimate.
    - `window_observations`: it applies a window's own operators and errors
      (`ObsWindow.operator`, `ObsWindow.error_std`, through `map_times`), so it takes
      observations at positions and each observation's error.
    - `ensemble`: it analyses an ensemble (`AbstractEnsembleMethod`): the cycle carries
      `members` states, forecasts each, and hands on the analysis ensemble.
    """

    obs_operator: eqx.AbstractVar[AbstractObsOperator]
    prior_cov: eqx.AbstractVar[AbstractCovariance]
    obs_cov: eqx.AbstractVar[AbstractCovariance]
    four_dimensional: ClassVar[bool] = True
    learned: ClassVar[bool] = False
    samples_posterior: ClassVar[bool] = False
    window_observations: ClassVar[bool] = False
    ensemble: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def state_size(self) -> int:
        """Length of the analysed state."""

    @abc.abstractmethod
    def _analyse(self, background: jax.Array, obs: ObsWindow) -> Analysis:
        """The method proper, on a finite background."""

    def _check_config(self) -> None:
        name = type(self).__name__
        n = self.state_size
        if self.obs_operator.state_size != n:
            raise ValueError(
                f"{name}: obs_operator takes states of size {self.obs_operator.state_size} "
                f"but the state size is {n}"
            )
        if self.prior_cov.size != n:
            raise ValueError(f"{name}: prior_cov has size {self.prior_cov.size}, state size is {n}")
        if self.obs_cov.size != self.obs_operator.obs_size:
            raise ValueError(
                f"{name}: obs_cov has size {self.obs_cov.size} but obs_operator returns "
                f"{self.obs_operator.obs_size} observations"
            )

    def __call__(self, background: jax.Array, obs: ObsWindow) -> Analysis:
        """**Arguments:** `background` `(T+1, n)`; `obs` an `ObsWindow` of `T+1` times.

        **Returns** an `Analysis`.
        """
        name = type(self).__name__
        background = jnp.asarray(background)
        if background.ndim != 2 or background.shape[1] != self.state_size:
            raise ValueError(
                f"{name}: background has shape {tuple(background.shape)}, expected "
                f"(window times, {self.state_size})"
            )
        if obs.values.shape != (background.shape[0], self.obs_operator.obs_size):
            raise ValueError(
                f"{name}: observations have shape {tuple(obs.values.shape)}, expected "
                f"({background.shape[0]}, {self.obs_operator.obs_size}) — one row per window "
                f"time, one column per observation of obs_operator"
            )
        return guarded(background, self._analyse, obs)


def guarded(background, analyse, obs: ObsWindow, ensemble=None) -> Analysis:
    """`analyse(background, obs)` (or `analyse(ensemble, obs)` for an ensemble method, whose
    `background` is the ensemble's mean) with the protocol's guarantees: the background
    (and its ensemble) handed back with a result code when it is not finite or the window
    has no observations, and a non-finite analysis named as such unless the method named
    its own failure."""
    finite = jnp.all(jnp.isfinite(background))
    if ensemble is not None:
        finite = finite & jnp.all(jnp.isfinite(ensemble))
    has_obs = jnp.any(obs.mask)
    if ensemble is None:
        analysis = analyse(jnp.where(finite, background, 0.0), obs)
    else:
        analysis = analyse(jnp.where(finite, ensemble, 0.0), obs)
    keep_background = ~finite | ~has_obs
    trajectory = jnp.where(keep_background, background, analysis.trajectory)
    members = None
    if ensemble is not None:
        members = jnp.where(keep_background, ensemble, analysis.ensemble)
    # a non-finite analysis keeps the method's own failure (a singular solve, a failed
    # minimiser) when it names one: that is what happened
    named_failure = (analysis.result != AnalysisResult.successful) & (
        analysis.result != AnalysisResult.max_steps_reached
    )
    all_finite = jnp.all(jnp.isfinite(trajectory))
    if members is not None:
        all_finite = all_finite & jnp.all(jnp.isfinite(members))
    result = AnalysisResult.where(
        ~finite,
        AnalysisResult.nonfinite_background,
        AnalysisResult.where(
            ~has_obs,
            AnalysisResult.no_observations,
            AnalysisResult.where(
                all_finite | named_failure, analysis.result, AnalysisResult.nonfinite_analysis
            ),
        ),
    )
    model_error = analysis.model_error
    if model_error is not None:
        model_error = jnp.where(keep_background, 0.0, model_error)
    # a non-finite background has no meaningful cost
    cost_before = jnp.where(finite, analysis.cost_before, jnp.nan)
    return Analysis(
        trajectory=trajectory,
        cost_before=cost_before,
        cost_after=jnp.where(keep_background, cost_before, analysis.cost_after),
        iterations=jnp.where(keep_background, 0, analysis.iterations),
        result=result,
        model_error=model_error,
        ensemble=members,
    )
