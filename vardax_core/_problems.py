"""Synthetic truths and noisy observations: the seeds' single-window problems and
cycled (OSSE) experiments. Pure JAX: every array comes from a `jax.random` key."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._analysis import ObsWindow
from ._cov import AbstractCovariance, DiagonalCovariance, ScaledIdentityCovariance
from ._dynamics import AbstractForwardModel, Lorenz63, Lorenz96, Lorenz96TwoLevel
from ._obs import AbstractObsOperator, SubsetObs


def nature_run(model: AbstractForwardModel, key, n_steps: int, spinup_steps: int, scale=1.0):
    """A truth on the attractor: a random state spun up `spinup_steps`, then `n_steps` more.

    **Returns** `(n_steps + 1, n)`.
    """
    x0 = model.random_state(key, scale)
    x_start = model.rollout(x0, spinup_steps)[-1] if spinup_steps else x0
    return model.rollout(x_start, n_steps)


def observe(
    obs_operator: AbstractObsOperator,
    truth,
    obs_std,
    key,
    obs_every: int = 1,
    obs_fraction: float = 1.0,
):
    """Noisy observations `H(x_t) + N(0, obs_std²)` at every `obs_every`-th time of `truth`,
    each entry kept with probability `obs_fraction` (a random mask, as in seed 002).

    **Returns** an `ObsWindow` over all times of `truth` (missing entries masked).
    """
    k_noise, k_mask = jax.random.split(key)
    clean = jax.vmap(obs_operator)(truth)
    noisy = clean + obs_std * jax.random.normal(k_noise, clean.shape, clean.dtype)
    observed = (jnp.arange(truth.shape[0]) % obs_every == 0)[:, None]
    mask = jnp.broadcast_to(observed, clean.shape)
    if obs_fraction < 1.0:
        mask = mask & jax.random.bernoulli(k_mask, obs_fraction, clean.shape)
    return ObsWindow(noisy, mask)


class WindowProblem(eqx.Module):
    """One assimilation window followed by a free forecast (seeds 001, 002).

    `truth` covers `0..n_total`; `obs` and `background` the window `0..n_assim`.
    """

    model: AbstractForwardModel
    obs_operator: AbstractObsOperator
    prior_cov: AbstractCovariance
    obs_cov: AbstractCovariance
    truth: jax.Array
    obs: ObsWindow
    background: jax.Array
    n_assim: int = eqx.field(static=True)

    @property
    def n_total(self) -> int:
        return self.truth.shape[0] - 1


def _window_problem(
    model,
    obs_operator,
    obs_std,
    prior_mean,
    prior_cov,
    n_assim,
    n_total,
    obs_every,
    key,
    spinup_steps,
    obs_fraction=1.0,
):
    k_truth, k_obs = jax.random.split(key)
    truth = nature_run(model, k_truth, n_total, spinup_steps)
    obs = observe(obs_operator, truth[: n_assim + 1], obs_std, k_obs, obs_every, obs_fraction)
    background = jnp.broadcast_to(prior_mean, (n_assim + 1, model.state_size))
    return WindowProblem(
        model=model,
        obs_operator=obs_operator,
        prior_cov=prior_cov,
        obs_cov=ScaledIdentityCovariance(obs_operator.obs_size, obs_std**2),
        truth=truth,
        obs=obs,
        background=background,
        n_assim=n_assim,
    )


def l96_two_level_window_problem(
    key, n_assim: int = 80, n_total: int = 200, obs_fraction: float = 0.2
) -> WindowProblem:
    """Seed 002 as reconstructed: two-level Lorenz-96 (K=8, J=8, F=20, h=1, c=10, b=10,
    dt=0.005); the slow variables observed with σ_o = 0.5, each (time, site) entry present
    with probability `obs_fraction` (0.2 reproduces the seed's OI scores); prior mean 0 and
    B = 25·I."""
    model = Lorenz96TwoLevel()
    return _window_problem(
        model,
        SubsetObs(range(model.K), model.state_size),
        obs_std=0.5,
        prior_mean=jnp.zeros(model.state_size),
        prior_cov=ScaledIdentityCovariance(model.state_size, 25.0),
        n_assim=n_assim,
        n_total=n_total,
        obs_every=1,
        key=key,
        spinup_steps=2000,
        obs_fraction=obs_fraction,
    )


# Climatology of Lorenz-63 (σ=10, ρ=28, β=8/3): time mean and variances of a long free run.
_L63_CLIM_MEAN = (0.0, 0.0, 23.5)
_L63_CLIM_VAR = (62.0, 77.0, 73.0)


def l63_window_problem(key, n_assim: int = 50, n_total: int = 200) -> WindowProblem:
    """Seed 001/004: Lorenz-63 (dt=0.01), a 0.5-time-unit window with all three components
    observed every 5 steps (σ_o = 1), the climatological prior, then a free forecast."""
    model = Lorenz63()
    return _window_problem(
        model,
        SubsetObs(range(3), 3),
        obs_std=1.0,
        prior_mean=jnp.array(_L63_CLIM_MEAN),
        prior_cov=DiagonalCovariance(jnp.array(_L63_CLIM_VAR)),
        n_assim=n_assim,
        n_total=n_total,
        obs_every=5,
        key=key,
        spinup_steps=1000,
    )


def l96_window_problem(key, K: int = 40, n_assim: int = 20, n_total: int = 60) -> WindowProblem:
    """Lorenz-96 (K, F=8, dt=0.05): every other site observed every step (σ_o = 1), prior
    mean from climatology (≈ 2.3) with B = 13·I (≈ the climatological variance)."""
    model = Lorenz96(K=K)
    return _window_problem(
        model,
        SubsetObs(range(0, K, 2), K),
        obs_std=1.0,
        prior_mean=jnp.full((K,), 2.3),
        prior_cov=ScaledIdentityCovariance(K, 13.0),
        n_assim=n_assim,
        n_total=n_total,
        obs_every=1,
        key=key,
        spinup_steps=1000,
    )


class CycledProblem(eqx.Module):
    """An OSSE for cycling: a truth at every model step and its observations.

    `obs` has one row per model step `0..n_steps` (row 0 is never observed: it is the
    initial time). `first_background` is the first cycle's background at step 0.
    """

    truth: jax.Array
    obs: ObsWindow
    first_background: jax.Array


def cycled_problem(
    model,
    obs_operator,
    obs_std,
    n_steps,
    key,
    spinup_steps=1000,
    first_guess_std=1.0,
    obs_every=1,
    seen=None,
) -> CycledProblem:
    """`seen`: optional `(n_steps + 1, m)` booleans, which observations exist at each time
    (e.g. `swath_schedule`); by default all, every `obs_every` steps."""
    k_truth, k_obs, k_guess = jax.random.split(key, 3)
    truth = nature_run(model, k_truth, n_steps, spinup_steps)
    obs = observe(obs_operator, truth, obs_std, k_obs, obs_every)
    mask = obs.mask if seen is None else obs.mask & jnp.asarray(seen)
    mask = mask.at[0].set(False)
    guess = truth[0] + model.perturbation(k_guess, first_guess_std).astype(truth.dtype)
    return CycledProblem(truth=truth, obs=ObsWindow(obs.values, mask), first_background=guess)


def perturbed_ensemble(model: AbstractForwardModel, x, key, members: int, std: float):
    """`members` initial states around `x`: member 0 is `x`, the others `x` plus noise of
    standard deviation `std` (the model's `perturbation`). **Returns** `(members, n)`."""
    noise = jax.vmap(lambda k: model.perturbation(k, std))(jax.random.split(key, members))
    return x[None] + noise.astype(x.dtype).at[0].set(0.0)
