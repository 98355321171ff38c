"""The pipeline's numerical runtime, set by an explicit call (`configure_runtime`), never on
import: the CLI makes it, and resolving an experiment (`tasks.experiment`) makes it before
any array exists."""

import os

_done = False


def configure_runtime() -> None:
    """Sets what the pipeline's numerics run under, once per process: JAX in double
    precision (the stated RMSEs were measured so), and JAX's persistent compilation cache in
    `~/.cache/vardax-cycle/jax` (`VARDAX_JAX_CACHE`: another folder, or `off`), so a new
    process (each scheduled run) does not recompile the cycle."""
    global _done
    if _done:
        return
    import jax

    jax.config.update("jax_enable_x64", True)
    cache = os.environ.get("VARDAX_JAX_CACHE", os.path.expanduser("~/.cache/vardax-cycle/jax"))
    if cache != "off":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    _done = True
