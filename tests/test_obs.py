import jax
import jax.numpy as jnp
import lineax as lx
import pytest

import vardax_core as vc


def test_operators_and_their_linearisations():
    x = jax.random.normal(jax.random.PRNGKey(0), (6,))
    A = jax.random.normal(jax.random.PRNGKey(1), (3, 6))
    ops = [
        vc.LinearObs(A),
        vc.LinearObs(lx.MatrixLinearOperator(A)),
        vc.SubsetObs([0, 2, 5], 6),
        vc.NonlinearObs([1, 3], 6),
    ]
    for op in ops:
        J = jax.jacfwd(op)(x)
        assert jnp.allclose(op.linearise(x).as_matrix(), J), type(op).__name__
        assert op(x).shape == (op.obs_size,)
    assert jnp.allclose(ops[2](x), x[jnp.array([0, 2, 5])])
    assert jnp.allclose(ops[3](x), jnp.arctan(x[jnp.array([1, 3])]))
    assert ops[0].is_linear and ops[2].is_linear and not ops[3].is_linear


def test_bad_indices_are_named():
    with pytest.raises(ValueError, match=r"indices \[7\] are outside a state of size 6"):
        vc.SubsetObs([1, 7], 6)
