"""The five classical analysis methods, all `AbstractAnalysisMethod`s.

Every variational method works on the control variable `χ` of the control-variable
transform `x = x_b + L χ` with `B = L Lᵀ`, so its prior term is `½|χ|²`.
"""

import functools
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx

from ._analysis import (
    AbstractAnalysisMethod,
    Analysis,
    AnalysisResult,
    _from_lineax,
    _from_optx,
    innovation_operators,
    map_times,
    obs_cost,
    predicted_obs,
)
from ._cov import AbstractCovariance
from ._dynamics import AbstractForwardModel, Diffrax
from ._obs import AbstractObsOperator


def _worst(results: AnalysisResult) -> AnalysisResult:
    """Reduces a batch of per-time results to one: the first failure (its own code: a
    singular solve, a failed minimiser), else a step limit if any time reached one."""
    ok = results == AnalysisResult.successful
    maxed = results == AnalysisResult.max_steps_reached
    failed = ~ok & ~maxed
    first_failure = jax.tree_util.tree_map(lambda v: v[jnp.argmax(failed)], results)
    return AnalysisResult.where(
        jnp.all(ok),
        AnalysisResult.successful,
        AnalysisResult.where(jnp.any(failed), first_failure, AnalysisResult.max_steps_reached),
    )


class OptimalInterpolation(AbstractAnalysisMethod):
    """BLUE at each window time with observations, in closed form:

    $$x_a = x_b + B H^T (H B H^T + R)^{-1} (y − H x_b)$$

    The innovation covariance is solved with `linear_solver` (lineax; Cholesky by default,
    `lx.CG` for matrix-free use); a failed solve at any window time is the result
    `singular` (`max_steps_reached` for an iterative solver out of steps). Rejects a
    nonlinear `obs_operator` at construction.
    """

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    linear_solver: lx.AbstractLinearSolver = lx.AutoLinearSolver(well_posed=True)
    four_dimensional: ClassVar[bool] = False
    window_observations: ClassVar[bool] = True

    def __check_init__(self):
        if not self.obs_operator.is_linear:
            raise ValueError(
                f"OptimalInterpolation needs a linear obs_operator, got the nonlinear "
                f"{type(self.obs_operator).__name__}; use ThreeDVar for nonlinear H"
            )
        self._check_config()

    @property
    def state_size(self):
        return self.prior_cov.size

    def _cost(self, obs_operator, obs_cov, xb, x, y, mask):
        innovation = jnp.where(mask, y - obs_operator(x), 0.0)
        return 0.5 * self.prior_cov.inv_quad(x - xb) + 0.5 * obs_cov.masked_inv_quad(
            innovation, mask
        )

    def _blue(self, obs_operator, obs_cov, xb, y, mask):
        H, B, M, S = innovation_operators(obs_operator, self.prior_cov, obs_cov, xb, mask)
        innovation = jnp.where(mask, y - obs_operator(xb), 0.0)
        solution = lx.linear_solve(S, innovation, self.linear_solver, throw=False)
        xa = xb + B.mv(H.T.mv(M.mv(solution.value)))
        result = _from_lineax(solution.result)
        cost = functools.partial(self._cost, obs_operator, obs_cov, xb)
        return xa, cost(xb, y, mask), cost(xa, y, mask), result

    def _analyse(self, background, obs):
        xa, before, after, results = map_times(
            self._blue, obs, self.obs_operator, self.obs_cov, background, obs.values, obs.mask
        )
        return Analysis(
            trajectory=xa,
            cost_before=jnp.sum(before),
            cost_after=jnp.sum(after),
            iterations=jnp.array(0),
            result=_worst(results),
        )


class ThreeDVar(AbstractAnalysisMethod):
    """3DVar at each window time with observations (`H` may be nonlinear):

    $$J(χ) = \\tfrac12|χ|^2 + \\tfrac12\\|y − H(x_b + Lχ)\\|^2_{R^{-1}}$$

    minimised by `minimiser` (any optimistix minimiser; BFGS by default).
    """

    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    minimiser: optx.AbstractMinimiser = optx.BFGS(rtol=1e-7, atol=1e-7)
    max_steps: int = eqx.field(static=True, default=500)
    four_dimensional: ClassVar[bool] = False
    window_observations: ClassVar[bool] = True

    def __check_init__(self):
        self._check_config()

    @property
    def state_size(self):
        return self.prior_cov.size

    def _single(self, obs_operator, obs_cov, xb, y, mask):
        def cost(chi, _):
            innovation = jnp.where(mask, y - obs_operator(xb + self.prior_cov.sqrt_mv(chi)), 0.0)
            return 0.5 * jnp.vdot(chi, chi) + 0.5 * obs_cov.masked_inv_quad(innovation, mask)

        chi0 = jnp.zeros_like(xb)
        sol = optx.minimise(cost, self.minimiser, chi0, max_steps=self.max_steps, throw=False)
        xa = xb + self.prior_cov.sqrt_mv(sol.value)
        return (
            xa,
            cost(chi0, None),
            cost(sol.value, None),
            sol.stats["num_steps"],
            _from_optx(sol.result),
        )

    def _analyse(self, background, obs):
        xa, before, after, steps, results = map_times(
            self._single, obs, self.obs_operator, self.obs_cov, background, obs.values, obs.mask
        )
        return Analysis(
            trajectory=xa,
            cost_before=jnp.sum(before),
            cost_after=jnp.sum(after),
            iterations=jnp.max(steps),
            result=_worst(results),
        )


def _has_forward_mode(model: AbstractForwardModel) -> bool:
    """Whether the model can be differentiated in forward mode (tangent linear)."""
    integrator = model.integrator
    return not isinstance(integrator, Diffrax) or isinstance(
        integrator.adjoint, (dfx.DirectAdjoint, dfx.ForwardMode)
    )


class _AbstractFourDVar(AbstractAnalysisMethod):
    """What strong, weak and incremental 4DVar share: a model over the window."""

    window_observations: ClassVar[bool] = True

    model: eqx.AbstractVar[AbstractForwardModel]

    @property
    def state_size(self):
        return self.model.state_size

    def _predicted_cost(self, trajectory, obs):
        return obs_cost(self.obs_operator, self.obs_cov, trajectory, obs)


class StrongFourDVar(_AbstractFourDVar):
    """Strong-constraint 4DVar: the control is the window's initial state.

    $$J(χ) = \\tfrac12|χ|^2 + \\tfrac12\\sum_{t=0}^{T}\\|y_t − H(M_{0→t}(x_b + Lχ))\\|^2_{R^{-1}}$$

    **Arguments:**
    - `minimiser`: an optimistix least-squares solver, which minimises the cost as the sum of
      squares it is (default Levenberg–Marquardt: a damped Gauss–Newton that, started from
      a poor first guess, finds deeper minima than quasi-Newton methods), or any optimistix
      minimiser (`optx.LBFGS`, `optx.BFGS`, …).
    - `minimiser_adjoint`: how gradients flow through the minimisation when the analysis is
      itself differentiated (default `optx.ImplicitAdjoint`, the implicit function theorem).
    - `forward_adjoint`: a diffrax adjoint to use through the model (e.g. `BacksolveAdjoint`);
      needs a model integrated by `Diffrax`. `None` keeps the model's own.
    - `max_steps`: the minimiser's step budget.
    """

    model: AbstractForwardModel
    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    minimiser: optx.AbstractMinimiser | optx.AbstractLeastSquaresSolver = optx.LevenbergMarquardt(
        rtol=1e-5, atol=1e-5
    )
    minimiser_adjoint: optx.AbstractAdjoint = optx.ImplicitAdjoint()
    forward_adjoint: dfx.AbstractAdjoint | None = None
    max_steps: int = eqx.field(static=True, default=500)

    def __check_init__(self):
        if self.forward_adjoint is not None and not isinstance(self.model.integrator, Diffrax):
            raise ValueError(
                "StrongFourDVar: forward_adjoint needs a model integrated by Diffrax(...), "
                f"but the model uses {type(self.model.integrator).__name__}"
            )
        self._check_config()

    def _forward(self) -> AbstractForwardModel:
        if self.forward_adjoint is None:
            return self.model
        return eqx.tree_at(lambda m: m.integrator.adjoint, self.model, self.forward_adjoint)

    def _analyse(self, background, obs):
        model, n_steps, xb = self._forward(), obs.n_times - 1, background[0]

        def trajectory(chi):
            return model.rollout(xb + self.prior_cov.sqrt_mv(chi), n_steps)

        def whitened(H, R, x, y, mask):
            return R.masked_whiten(jnp.where(mask, y - H(x), 0.0), mask)

        def residuals(chi, _):
            args = (trajectory(chi), obs.values, obs.mask)
            return chi, map_times(whitened, obs, self.obs_operator, self.obs_cov, *args)

        def cost(chi, _):
            return 0.5 * sum(jnp.vdot(r, r) for r in residuals(chi, None))

        chi0 = jnp.zeros_like(xb)
        common = dict(max_steps=self.max_steps, adjoint=self.minimiser_adjoint, throw=False)
        if self._least_squares:
            # Jacobians by forward mode unless the model's adjoint is reverse-only
            options = {"jac": "fwd" if _has_forward_mode(model) else "bwd"}
            sol = optx.least_squares(residuals, self.minimiser, chi0, options=options, **common)
        else:
            sol = optx.minimise(cost, self.minimiser, chi0, **common)
        return Analysis(
            trajectory=trajectory(sol.value),
            cost_before=cost(chi0, None),
            cost_after=cost(sol.value, None),
            iterations=sol.stats["num_steps"],
            result=_from_optx(sol.result),
        )

    @property
    def _least_squares(self) -> bool:
        return isinstance(self.minimiser, optx.AbstractLeastSquaresSolver)


class WeakFourDVar(_AbstractFourDVar):
    """Weak-constraint 4DVar: the controls are the initial state and the model errors
    `η_t` added after each step, `x_{t} = M(x_{t−1}) + η_t`, with `η_t ~ N(0, Q)`:

    $$J = \\tfrac12|χ_0|^2 + \\tfrac12\\sum_{t=1}^{T}|ξ_t|^2
          + \\tfrac12\\sum_{t=0}^{T}\\|y_t − H(x_t)\\|^2_{R^{-1}},\\quad
          x_0 = x_b + Lχ_0,\\ η_t = L_Q ξ_t$$

    minimised jointly by `minimiser` (default L-BFGS: the control has `(T+1)·n` entries).
    """

    model: AbstractForwardModel
    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    model_error_cov: AbstractCovariance
    minimiser: optx.AbstractMinimiser = optx.LBFGS(rtol=1e-7, atol=1e-7, history_length=20)
    max_steps: int = eqx.field(static=True, default=2000)

    def __check_init__(self):
        if self.model_error_cov.size != self.model.state_size:
            raise ValueError(
                f"WeakFourDVar: model_error_cov has size {self.model_error_cov.size}, state size "
                f"is {self.model.state_size}"
            )
        self._check_config()

    def _trajectory(self, xb, control):
        chi0, xi = control
        x0 = xb + self.prior_cov.sqrt_mv(chi0)
        model_error = jax.vmap(self.model_error_cov.sqrt_mv)(xi)

        def step(x, eta):
            x_next = self.model.step(x) + eta
            return x_next, x_next

        _, xs = jax.lax.scan(step, x0, model_error)
        return jnp.concatenate([x0[None], xs]), model_error

    def _analyse(self, background, obs):
        xb, n_steps = background[0], obs.n_times - 1

        def cost(control, _):
            trajectory, _ = self._trajectory(xb, control)
            chi0, xi = control
            return 0.5 * (jnp.vdot(chi0, chi0) + jnp.vdot(xi, xi)) + self._predicted_cost(
                trajectory, obs
            )

        control0 = (jnp.zeros_like(xb), jnp.zeros((n_steps, xb.shape[0]), xb.dtype))
        sol = optx.minimise(cost, self.minimiser, control0, max_steps=self.max_steps, throw=False)
        trajectory, model_error = self._trajectory(xb, sol.value)
        return Analysis(
            trajectory=trajectory,
            cost_before=cost(control0, None),
            cost_after=cost(sol.value, None),
            iterations=sol.stats["num_steps"],
            result=_from_optx(sol.result),
            model_error=model_error,
        )


class IncrementalFourDVar(_AbstractFourDVar):
    """Incremental strong-constraint 4DVar (Courtier et al. 1994).

    Outer loops relinearise the model and `H` about the current guess `x = x_b + Lχ`; each
    inner loop solves the quadratic problem for the increment `δχ` by conjugate gradients:

    $$(I + L^T G^T R^{-1} G L)\\,δχ = −χ + L^T G^T R^{-1} d$$

    with `G` the tangent-linear of `x_0 ↦ H(M_{0→t}(x_0))` and `d` the innovations.

    **Arguments:**
    - `n_outer`: maximum Gauss–Newton outer loops.
    - `n_inner`: conjugate-gradient iterations per outer loop.
    - `tolerance`: CG relative/absolute residual tolerance, and the outer stopping test
      `|δχ| ≤ tolerance·(1 + |χ|)`.
    - `line_search`: halve the Gauss–Newton step (up to `max_halvings` times) until the
      nonlinear cost decreases — keeps the outer loop from diverging when the guess is far
      from the truth. `False` gives plain Gauss–Newton.

    Result: `max_steps_reached` when the `n_outer` loops ran out before the step test was
    met; `minimiser_failed` when an inner solve broke down (non-finite or singular).
    """

    model: AbstractForwardModel
    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    n_outer: int = eqx.field(static=True, default=10)
    n_inner: int = eqx.field(static=True, default=50)
    tolerance: float = eqx.field(static=True, default=1e-6)
    line_search: bool = eqx.field(static=True, default=True)
    max_halvings: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        integrator = self.model.integrator
        if isinstance(integrator, Diffrax) and not isinstance(
            integrator.adjoint, dfx.DirectAdjoint
        ):
            raise ValueError(
                "IncrementalFourDVar needs both tangent-linear (forward-mode) and adjoint "
                f"(reverse-mode) derivatives of the model, which {type(integrator.adjoint).__name__} "
                "does not give: use Diffrax(adjoint=diffrax.DirectAdjoint()) or the RK4 integrator"
            )
        if self.n_outer < 1 or self.n_inner < 1:
            raise ValueError(
                f"IncrementalFourDVar: n_outer and n_inner must be >= 1, got {self.n_outer}, "
                f"{self.n_inner}"
            )
        self._check_config()

    def _analyse(self, background, obs):
        xb, n_steps = background[0], obs.n_times - 1
        L = self.prior_cov

        def predict(x0):
            return predicted_obs(self.obs_operator, self.model.rollout(x0, n_steps), obs)

        def cost(chi):
            x0 = xb + L.sqrt_mv(chi)
            return 0.5 * jnp.vdot(chi, chi) + self._predicted_cost(
                self.model.rollout(x0, n_steps), obs
            )

        def r_inv(v):
            solve = lambda H, R, v_t, mask: R.masked_solve(v_t, mask)  # noqa: E731
            return map_times(solve, obs, self.obs_operator, self.obs_cov, v, obs.mask)

        def outer(carry):
            k, chi, j, _, failed = carry
            x0 = xb + L.sqrt_mv(chi)
            predicted, tangent = jax.linearize(predict, x0)
            adjoint = jax.linear_transpose(tangent, x0)
            innovation = jnp.where(obs.mask, obs.values - predicted, 0.0)

            def hessian(dchi):
                return dchi + L.sqrt_T_mv(adjoint(r_inv(tangent(L.sqrt_mv(dchi))))[0])

            rhs = -chi + L.sqrt_T_mv(adjoint(r_inv(innovation))[0])
            operator = lx.FunctionLinearOperator(
                hessian,
                jax.ShapeDtypeStruct(chi.shape, chi.dtype),
                (lx.symmetric_tag, lx.positive_semidefinite_tag),
            )
            solver = lx.CG(rtol=self.tolerance, atol=self.tolerance, max_steps=self.n_inner)
            inner = lx.linear_solve(operator, rhs, solver, throw=False)
            dchi = inner.value
            # CG out of its `n_inner` steps is the truncated inner loop of incremental 4DVar
            broke = (inner.result != lx.RESULTS.successful) & (
                inner.result != lx.RESULTS.max_steps_reached
            )
            if self.line_search:

                def shorter(state):
                    alpha, _, i = state
                    return alpha / 2, cost(chi + (alpha / 2) * dchi), i + 1

                def worse(state):
                    _, j_new, i = state
                    return ~(j_new < j) & (i < self.max_halvings)

                alpha, j_new, _ = jax.lax.while_loop(
                    worse, shorter, (jnp.ones((), chi.dtype), cost(chi + dchi), 0)
                )
                accepted = j_new < j
            else:
                alpha, j_new, accepted = jnp.ones((), chi.dtype), cost(chi + dchi), jnp.array(True)
            accepted = accepted & ~broke
            step = jnp.where(accepted, alpha, 0.0) * dchi
            chi_new = chi + step
            # no decrease along the step is a stationary point: converged
            converged = ~accepted | (
                jnp.linalg.norm(step) <= self.tolerance * (1.0 + jnp.linalg.norm(chi_new))
            )
            return k + 1, chi_new, jnp.where(accepted, j_new, j), converged, failed | broke

        def not_done(carry):
            k, _, _, converged, failed = carry
            return (k < self.n_outer) & ~converged & ~failed

        chi0 = jnp.zeros_like(xb)
        j0 = cost(chi0)
        start = (0, chi0, j0, jnp.array(False), jnp.array(False))
        k, chi, j, converged, failed = jax.lax.while_loop(not_done, outer, start)
        result = AnalysisResult.where(
            failed,
            AnalysisResult.minimiser_failed,
            AnalysisResult.where(
                converged, AnalysisResult.successful, AnalysisResult.max_steps_reached
            ),
        )
        return Analysis(
            trajectory=self.model.rollout(xb + L.sqrt_mv(chi), n_steps),
            cost_before=j0,
            cost_after=j,
            iterations=jnp.asarray(k),
            result=result,
        )
