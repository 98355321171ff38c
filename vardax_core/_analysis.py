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
    """

    values: jax.Array
    mask: jax.Array

    def __init__(self, values, mask=None):
        values = jnp.asarray(values)
        mask = jnp.isfinite(values) if mask is None else jnp.asarray(mask).astype(bool)
        if values.ndim != 2:
            raise ValueError(f"ObsWindow: values must be (time, m), got shape {values.shape}")
        if mask.shape != values.shape:
            raise ValueError(
                f"ObsWindow: mask shape {mask.shape} does not match values shape {values.shape}"
            )
        self.mask = mask
        self.values = jnp.where(mask, values, 0.0)

    @property
    def n_times(self) -> int:
        return self.values.shape[-2]

    @property
    def obs_size(self) -> int:
        return self.values.shape[-1]


class Analysis(eqx.Module):
    """What an analysis step returns.

    **Fields:**
    - `trajectory`: `(T+1, n)` analysed states over the window.
    - `cost_before`, `cost_after`: the method's cost at the background and at the analysis.
    - `iterations`: minimiser steps (outer loops for incremental 4DVar; 0 for OI).
    - `result`: an `AnalysisResult`.
    - `model_error`: `(T, n)` estimated model errors `η` (weak-constraint 4DVar), else `None`.
    """

    trajectory: jax.Array
    cost_before: jax.Array
    cost_after: jax.Array
    iterations: jax.Array
    result: AnalysisResult
    model_error: jax.Array | None = None

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
    """$\\tfrac12 \\sum_t \\|y_t − H(x_t)\\|^2_{R^{-1}}$ over the observed entries."""
    predicted = jax.vmap(obs_operator)(states)
    innovation = jnp.where(obs.mask, obs.values - predicted, 0.0)
    return 0.5 * jnp.sum(jax.vmap(obs_cov.masked_inv_quad)(innovation, obs.mask))


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
    """

    obs_operator: eqx.AbstractVar[AbstractObsOperator]
    prior_cov: eqx.AbstractVar[AbstractCovariance]
    obs_cov: eqx.AbstractVar[AbstractCovariance]
    four_dimensional: ClassVar[bool] = True
    learned: ClassVar[bool] = False
    samples_posterior: ClassVar[bool] = False

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
        finite = jnp.all(jnp.isfinite(background))
        has_obs = jnp.any(obs.mask)
        analysis = self._analyse(jnp.where(finite, background, 0.0), obs)
        keep_background = ~finite | ~has_obs
        trajectory = jnp.where(keep_background, background, analysis.trajectory)
        # a non-finite analysis keeps the method's own failure (a singular solve, a failed
        # minimiser) when it names one: that is what happened
        named_failure = (analysis.result != AnalysisResult.successful) & (
            analysis.result != AnalysisResult.max_steps_reached
        )
        result = AnalysisResult.where(
            ~finite,
            AnalysisResult.nonfinite_background,
            AnalysisResult.where(
                ~has_obs,
                AnalysisResult.no_observations,
                AnalysisResult.where(
                    jnp.all(jnp.isfinite(trajectory)) | named_failure,
                    analysis.result,
                    AnalysisResult.nonfinite_analysis,
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
        )
