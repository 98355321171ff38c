"""Verification of derivatives (what every 4DVar system tests first)."""

import jax
import jax.numpy as jnp


def tangent_linear_test(f, x, dx, eps: float = 1e-6) -> jax.Array:
    """Relative error between the tangent linear `f'(x) dx` and the central finite
    difference `(f(x + ε dx) − f(x − ε dx)) / 2ε`."""
    _, jvp = jax.jvp(f, (x,), (dx,))
    fd = (f(x + eps * dx) - f(x - eps * dx)) / (2 * eps)
    return jnp.linalg.norm(jvp - fd) / jnp.maximum(jnp.linalg.norm(fd), 1e-300)


def taylor_test(f, x, dx, epsilons=(1e-1, 1e-2, 1e-3, 1e-4)) -> jax.Array:
    """Remainders `|f(x + ε dx) − f(x) − ε f'(x) dx|` for decreasing `ε`; they fall as `ε²`
    when the tangent linear is right."""
    fx, jvp = jax.jvp(f, (x,), (dx,))
    return jnp.stack([jnp.linalg.norm(f(x + e * dx) - fx - e * jvp) for e in epsilons])


def adjoint_test(f, x, dx, dy, f_reverse=None) -> jax.Array:
    """Dot-product test: relative gap between `⟨f'(x) dx, dy⟩` and `⟨dx, f'(x)ᵀ dy⟩`.

    `f_reverse` (default `f`) is the same map differentiated in reverse mode, for maps
    whose forward- and reverse-mode derivatives come from different code (diffrax adjoints).
    """
    _, jvp = jax.jvp(f, (x,), (dx,))
    _, vjp = jax.vjp(f if f_reverse is None else f_reverse, x)
    (adj,) = vjp(dy)
    lhs, rhs = jnp.vdot(jvp, dy), jnp.vdot(dx, adj)
    return jnp.abs(lhs - rhs) / jnp.maximum(jnp.abs(lhs), 1e-300)
