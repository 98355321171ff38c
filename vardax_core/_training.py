"""Training the learned methods on simulated pairs (optax), and the simulator of those
pairs from a model and an observation layout."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._amortized import AmortizedPosterior, gaussian_nll
from ._cov import AbstractCovariance
from ._dynamics import AbstractForwardModel
from ._learned import Batch1D, FourDVarNet
from ._obs import AbstractObsOperator
from ._problems import nature_run, observe

PRIOR_LOSS_WEIGHT = 0.1
"""Weight of the prior's reconstruction of the truth in FourDVarNet's training loss."""


# --- losses and steps ------------------------------------------------------------------


def fourdvarnet_loss(net: FourDVarNet, batch: Batch1D, obs_operator=None, end_weight=0.0):
    """`(loss, mse)`: the mean squared error of the analysis against the target (normalised
    states), plus `end_weight` times that of the window's last state (where the forecast
    starts), plus `PRIOR_LOSS_WEIGHT` times the prior's error on the target."""
    x = net(batch, obs_operator)
    zt = net.normalise(batch.target)
    err = (net.normalise(x) - zt) ** 2
    mse = jnp.mean(err)
    prior = jnp.mean(jax.vmap(net.prior_cost)(zt))
    return mse + end_weight * jnp.mean(err[:, -1]) + PRIOR_LOSS_WEIGHT * prior, mse


def amortized_loss(post: AmortizedPosterior, batch: Batch1D):
    """`(nll, mse)` of the normalised target under the predicted Gaussian."""
    bg = batch.background
    fn = post.normalised_posterior
    if bg is None:
        m, log_var = jax.vmap(fn)(batch.input, batch.mask)
    else:
        m, log_var = jax.vmap(fn)(batch.input, batch.mask, bg)
    zt = (batch.target - post.mean) / post.scale
    nll = gaussian_nll(m, jnp.exp(0.5 * log_var), zt)
    return nll, jnp.mean((m - zt) ** 2)


def _update(loss_fn, model, batch, optimizer, opt_state, *extra):
    (loss, _), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, batch, *extra)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, loss


@eqx.filter_jit
def train_step(
    net: FourDVarNet, batch: Batch1D, optimizer, opt_state, obs_operator=None, end_weight=0.0
):
    """One optax step of FourDVarNet on `batch`: **returns** `(net, opt_state, loss)`."""
    return _update(fourdvarnet_loss, net, batch, optimizer, opt_state, obs_operator, end_weight)


@eqx.filter_jit
def amortized_train_step(post: AmortizedPosterior, batch: Batch1D, optimizer, opt_state):
    """One optax step of the amortized posterior: **returns** `(post, opt_state, nll)`."""
    return _update(amortized_loss, post, batch, optimizer, opt_state)


@eqx.filter_jit
def eval_step(net: FourDVarNet, batch: Batch1D, obs_operator=None, end_weight=0.0):
    """`(loss, mse)` on a batch, without updating."""
    return fourdvarnet_loss(net, batch, obs_operator, end_weight)


@eqx.filter_jit
def amortized_eval_step(post: AmortizedPosterior, batch: Batch1D):
    """`(nll, mse)` on a batch, without updating."""
    return amortized_loss(post, batch)


def _take(batch: Batch1D, idx) -> Batch1D:
    return jax.tree_util.tree_map(lambda a: a[idx], batch)


def fit(
    model,
    train: Batch1D,
    *,
    steps: int,
    learning_rate: float = 3e-3,
    batch_size: int | None = None,
    key=None,
    validation: Batch1D | None = None,
    obs_operator=None,
    every: int = 50,
    callback: Callable[[dict], None] | None = None,
    end_weight: float = 0.0,
):
    """Trains a `FourDVarNet` or an `AmortizedPosterior` with Adam (cosine-decayed learning
    rate) for `steps` steps on minibatches of `train` (all of it when `batch_size` is
    `None`). Every `every` steps (and at the end) `callback` gets a dict `step`, `loss`,
    `val_loss`, `val_mse` (validation on `validation`, if given). `end_weight`
    (FourDVarNet): extra weight of the window's last state in the loss.

    **Returns** `(model, history)`, `history` the list of those dicts.
    """
    amortized = isinstance(model, AmortizedPosterior)
    if not amortized and not isinstance(model, FourDVarNet):
        raise TypeError(f"fit: expected a FourDVarNet or AmortizedPosterior, got {type(model)}")
    n = train.input.shape[0]
    batch_size = n if batch_size is None else min(batch_size, n)
    key = jax.random.PRNGKey(0) if key is None else key
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    extra = () if amortized else (obs_operator, end_weight)
    step_fn = amortized_train_step if amortized else train_step
    history = []
    running = []
    for i in range(1, steps + 1):
        key, sub = jax.random.split(key)
        batch = (
            train if batch_size == n else _take(train, jax.random.permutation(sub, n)[:batch_size])
        )
        model, opt_state, loss = step_fn(model, batch, optimizer, opt_state, *extra)
        running.append(loss)
        if i % every == 0 or i == steps:
            row = {"step": i, "loss": float(jnp.mean(jnp.stack(running)))}
            running = []
            if not jnp.isfinite(row["loss"]):
                raise FloatingPointError(
                    f"fit: the training loss became non-finite at step {i} (lower the "
                    f"learning rate, now {learning_rate})"
                )
            if validation is not None:
                ev = (
                    amortized_eval_step(model, validation)
                    if amortized
                    else eval_step(model, validation, obs_operator)
                )
                row["val_loss"], row["val_mse"] = float(ev[0]), float(ev[1])
            history.append(row)
            if callback is not None:
                callback(row)
    return model, history


# --- simulated pairs -------------------------------------------------------------------


def simulate_windows(
    model: AbstractForwardModel,
    obs_operator: AbstractObsOperator,
    obs_std: float,
    key,
    n: int,
    window: int,
    *,
    obs_every: int = 1,
    obs_fraction: float = 1.0,
    spinup_steps: int = 1000,
    background_cov: AbstractCovariance | None = None,
    background_scales: tuple[float, float] = (1.0, 1.0),
    first_row_observed: bool = True,
    seen=None,
) -> Batch1D:
    """`n` independent windows of `window` steps for training: truths on the attractor
    (each spun up `spinup_steps` from its own random state), their noisy observations
    (`observe`: every `obs_every` steps, each entry kept with probability `obs_fraction`;
    `seen` `(window+1, m)` restricts them further) and, with `background_cov`, a background
    per window: the forecast of the truth's initial state plus `N(0, B)` noise — the
    cycle's situation. `background_scales` `(low, high)`: the noise of each window is
    scaled by a factor drawn log-uniformly between them (cycling meets backgrounds from
    far better than `B` after good analyses to `B` after poor ones). `first_row_observed=False` masks the window's first row (the cycle
    assimilates it in the previous window).

    **Returns** a `Batch1D` with `input`/`mask` `(n, window+1, m)`, `target` and
    `background` `(n, window+1, state)` (fewer than `n` if some truth or background blew
    up: those windows are dropped).
    """
    k_truth, k_obs, k_bg = jax.random.split(key, 3)

    def one(kt, ko, kb):
        truth = nature_run(model, kt, window, spinup_steps)
        obs = observe(obs_operator, truth, obs_std, ko, obs_every, obs_fraction)
        mask = obs.mask if seen is None else obs.mask & jnp.asarray(seen)
        if not first_row_observed:
            mask = mask.at[0].set(False)
        if background_cov is None:
            background = jnp.zeros_like(truth)
        else:
            k_noise, k_scale = jax.random.split(kb)
            lo, hi = background_scales
            factor = jnp.exp(
                jax.random.uniform(k_scale, (), minval=jnp.log(lo), maxval=jnp.log(hi))
            )
            noise = background_cov.sqrt_mv(jax.random.normal(k_noise, truth[0].shape))
            x0 = truth[0] + factor * noise
            background = model.rollout(x0.astype(truth.dtype), window)
        return obs.values, mask, truth, background

    keys = [jax.random.split(k, n) for k in (k_truth, k_obs, k_bg)]
    values, mask, truth, background = jax.lax.map(
        lambda ks: one(*ks), tuple(keys), batch_size=min(n, 64)
    )
    # a truth that blew up from its random start (rare: the stiff two-level model) is
    # dropped rather than poisoning the training loss
    ok = jnp.all(jnp.isfinite(truth.reshape(n, -1)), axis=1) & jnp.all(
        jnp.isfinite(background.reshape(n, -1)), axis=1
    )
    if not bool(jnp.all(ok)):
        values, mask, truth, background = (a[ok] for a in (values, mask, truth, background))
    return Batch1D(
        input=values,
        mask=mask,
        target=truth,
        background=None if background_cov is None else background,
    )
