import jax
import pytest

# The science tests compare against finite differences and across methods to 1e-4 and
# tighter: run them in double precision.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
