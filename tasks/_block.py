"""Block mode: consecutive cycles in one task through `vardax_core.run_cycles` (the
`lax.scan` of `cycle_step`: the same numbers as cycle by cycle), persisted in one region
write with a status per cycle."""

import time

import equinox as eqx
import jax
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

import storage
import vardax_core as vc

from ._log import run_logger
from ._observations import Observations, obs_window, read_observations
from ._record import block_fields, verdicts
from ._restart import start_state
from ._run import CycleHalted, Run

_run_cycles = eqx.filter_jit(vc.run_cycles)


def padded_size(n: int, block: int) -> int:
    """The smallest power of two ≥ `n` (at least 16), or `n` itself beyond `block`: a short
    block is padded to a compiled size, so the last block of a range does not recompile."""
    if n > block:
        return n
    return max(16, 1 << (n - 1).bit_length())


def block_rows(exp, obs: list[Observations], size: int) -> vc.ObsWindow:
    """One row per model step — the first window's rows, then the last `shift` rows of
    every later window (the steps it adds: all but row 0 when windows do not overlap) —
    padded with cycles without observations to `size` cycles, as one `ObsWindow`."""
    new = exp.shift

    def rows(part: str, fill) -> np.ndarray:
        first = getattr(obs[0], part)
        arrays = [first] + [getattr(o, part)[-new:] for o in obs[1:]]
        pad = np.full(((size - len(obs)) * new, *first.shape[1:]), fill)
        return np.concatenate([*arrays, pad.astype(first.dtype)])

    positions = None if obs[0].positions is None else rows("positions", np.nan)
    return obs_window(
        exp, rows("values", 0.0), rows("mask", False), rows("error_std", 1.0), positions
    )


@task(
    name="cycle-block",
    task_run_name="block/{first}+{n_cycles}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def run_block(run: Run, first: storage.CyclePoint, n_cycles: int, cold: bool = False) -> list[str]:
    """`n_cycles` consecutive cycles from `first`; under `halt` the cycles after a failed one
    are not written and `CycleHalted` is raised. **Returns** the statuses written."""
    exp, t0 = run.exp, time.perf_counter()
    cycles = [exp.axis.cycle(first.index + k) for k in range(n_cycles)]
    x_start, _, fresh = start_state(exp, run.store, first, cold)
    obs = read_observations(exp, cycles)
    size = padded_size(n_cycles, exp.cfg.store.block)
    rows, first_index = block_rows(exp, obs, size), np.int64(first.index)  # traced
    traced = (first_index, np.bool_(fresh))  # one compilation for every block
    out = jax.device_get(_run_cycles(exp.core, x_start, rows, size, None, *traced))
    timings = {"wall_time_forecast_s": np.nan, "wall_time_analysis_s": np.nan}
    timings["wall_time_cycle_s"] = (time.perf_counter() - t0) / n_cycles
    vs = verdicts(exp, obs, out)
    statuses = [v.status for v in vs]
    if "failed" in statuses:  # under halt: the cycles after it are not written
        keep = statuses.index("failed") + 1
        vs, statuses = vs[:keep], statuses[:keep]
    data = block_fields(exp, obs[: len(vs)], out, vs, timings, fresh)
    run.store.write_cycles(first.time, exp.fields(data), statuses)
    counts = {s: statuses.count(s) for s in set(statuses)}
    run_logger().info(
        "block %s+%d: %s in %.2f s", first, len(statuses), counts, time.perf_counter() - t0
    )
    if statuses[-1] == "failed":
        raise CycleHalted(
            f"{exp.name}: cycle {cycles[len(statuses) - 1]} failed the gate — "
            f"{vs[-1].reason[:256]}. The run stops here; cycles after it were not run."
        )
    return statuses
