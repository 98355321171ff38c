"""The amortized posterior: observations → a Gaussian over the window's states in one
forward pass (no inner solve). An MLP encoder turns the masked observations (and the
background, when there is one) into a context vector; a regression head maps the context
to the posterior mean and log-variance of every state of the window."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ._learned import Batch1D

LOG_VAR_BOUNDS = (-12.0, 6.0)
"""The head's log-variances (of normalised states) are clipped to this range."""


class MLPObsEncoder(eqx.Module):
    """`(input_size,) → (context_dim,)`: an MLP with GELU activations."""

    mlp: eqx.nn.MLP

    def __init__(self, input_size: int, context_dim: int, hidden_dim: int, depth: int, *, key):
        self.mlp = eqx.nn.MLP(input_size, context_dim, hidden_dim, depth, jax.nn.gelu, key=key)

    def __call__(self, v):
        return self.mlp(v)


class RegressionHead(eqx.Module):
    """`context → (mean, log_var)`, each of `state_shape`."""

    mlp: eqx.nn.MLP
    state_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self, context_dim: int, state_shape: tuple[int, ...], hidden_dim: int, depth: int, *, key
    ):
        size = math.prod(state_shape)
        self.mlp = eqx.nn.MLP(context_dim, 2 * size, hidden_dim, depth, jax.nn.gelu, key=key)
        self.state_shape = tuple(state_shape)

    def __call__(self, context):
        mean, log_var = jnp.split(self.mlp(jax.nn.gelu(context)), 2)
        log_var = jnp.clip(log_var, *LOG_VAR_BOUNDS)
        return mean.reshape(self.state_shape), log_var.reshape(self.state_shape)


class AmortizedConfig(eqx.Module):
    """`head_type`: `"regression"` (a diagonal Gaussian); `n_samples`: the default number
    of posterior samples."""

    head_type: str = eqx.field(static=True, default="regression")
    n_samples: int = eqx.field(static=True, default=32)

    def __check_init__(self):
        if self.head_type != "regression":
            raise ValueError(
                f"AmortizedConfig: head_type must be 'regression', got {self.head_type!r}"
            )


class AmortizedPosterior(eqx.Module):
    """A diagonal Gaussian posterior `p(x | y)` over a window, amortized over problems.

    `post(batch)` → posterior means `(B, T, N)`; `post.posterior(batch)` → `(mean, std)`;
    `post.sample(batch, key, n)` → `(B, n, T, N)`. Inputs are normalised with `mean`,
    `scale` (states) and `obs_scale` (observations); the encoder sees the masked
    observations, the mask, and the background if the batch has one.
    """

    encoder: MLPObsEncoder
    head: RegressionHead
    config: AmortizedConfig
    mean: jax.Array
    scale: jax.Array
    obs_scale: jax.Array
    use_background: bool = eqx.field(static=True, default=False)

    def __init__(
        self,
        encoder,
        head,
        config=None,
        *,
        mean=0.0,
        scale=1.0,
        obs_scale=None,
        use_background=False,
    ):
        self.encoder = encoder
        self.head = head
        self.config = AmortizedConfig() if config is None else config
        tail = head.state_shape[1:]
        self.mean = jnp.broadcast_to(jnp.asarray(mean, float), tail)
        self.scale = jnp.broadcast_to(jnp.asarray(scale, float), tail)
        self.obs_scale = self.scale if obs_scale is None else jnp.asarray(obs_scale, float)
        self.use_background = use_background

    def _features(self, y, mask, background):
        mean, scale = jax.lax.stop_gradient((self.mean, self.scale))
        obs_scale = jax.lax.stop_gradient(self.obs_scale)
        obs_mean = mean if y.shape[1:] == mean.shape else 0.0
        parts = [jnp.where(mask, (y - obs_mean) / obs_scale, 0.0).ravel(), mask.ravel()]
        if self.use_background:
            if background is None:
                raise ValueError("AmortizedPosterior: built with use_background, batch has none")
            parts.append(((background - mean) / scale).ravel())
        return jnp.concatenate(parts).astype(float)

    def normalised_posterior(self, y, mask, background=None):
        """One window: `(mean, log_var)` of the normalised state."""
        return self.head(self.encoder(self._features(y, mask, background)))

    def posterior_one(self, y, mask, background=None):
        """One window: the posterior `(mean, std)` in physical units."""
        m, log_var = self.normalised_posterior(y, mask, background)
        mean, scale = jax.lax.stop_gradient((self.mean, self.scale))
        return mean + scale * m, scale * jnp.exp(0.5 * log_var)

    def posterior(self, batch: Batch1D):
        """`(mean, std)`, each `(B, T, N)`."""
        if batch.background is None:
            return jax.vmap(self.posterior_one)(batch.input, batch.mask)
        return jax.vmap(self.posterior_one)(batch.input, batch.mask, batch.background)

    def __call__(self, batch: Batch1D):
        return self.posterior(batch)[0]

    def sample(self, batch: Batch1D, key, n: int | None = None):
        """`n` posterior samples per case: `(B, n, T, N)`."""
        n = self.config.n_samples if n is None else n
        mean, std = self.posterior(batch)
        noise = jax.random.normal(key, (mean.shape[0], n, *mean.shape[1:]), mean.dtype)
        return mean[:, None] + std[:, None] * noise


def gaussian_nll(mean, std, target):
    """Mean negative log-likelihood per entry of `target` under `N(mean, std²)`."""
    z = (target - mean) / std
    return jnp.mean(0.5 * z**2 + jnp.log(std) + 0.5 * jnp.log(2 * jnp.pi))


def amortized_posterior(
    obs_shape, state_shape, *, key, context_dim=64, hidden_dim=128, depth=2, **kwargs
) -> AmortizedPosterior:
    """An `AmortizedPosterior` with an MLP encoder and regression head sized for
    observations `obs_shape` `(T, m)` and states `state_shape` `(T, N)`. `kwargs`:
    `mean`, `scale`, `obs_scale`, `use_background`, `config`."""
    k_enc, k_head = jax.random.split(key)
    size = 2 * math.prod(obs_shape)
    if kwargs.get("use_background"):
        size += math.prod(state_shape)
    encoder = MLPObsEncoder(size, context_dim, hidden_dim, depth, key=k_enc)
    head = RegressionHead(context_dim, tuple(state_shape), hidden_dim, depth, key=k_head)
    return AmortizedPosterior(encoder, head, **kwargs)
