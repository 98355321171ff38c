"""`store`: throughput of the cycle store on local disk, and the resume query at scale.

    python bench/store.py [--write]

- one Lorenz-96 (K=40) cycle per `write_cycle` (a 4DVar window of 5 times, 5 lead times,
  40 observations per time): median ms per cycle;
- a block of 1000 cycles in one region write (`write_cycles`): ms per cycle;
- a rerun of a committed cycle (written aside to the journal first, then applied);
- a store of 10,000 cycles: `first_not_committed` over all of them, store already open and
  from a cold `CycleStore.open` — the resume question a new process asks first; and
  `verify` of all of them (once).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, write_section

import storage as st

LAYOUT = st.StoreLayout(
    state_dims=(("site", 40),),
    window_offsets_s=tuple(range(0, 6 * 3600 + 1, 5400)),
    lead_offsets_s=tuple(range(0, 24 * 3600 + 1, 6 * 3600)),
    obs_size=40,
)


def cycles(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    W, L = len(LAYOUT.window_offsets_s), len(LAYOUT.lead_offsets_s)
    return {
        "background": rng.normal(size=(n, W, 40)),
        "analysis": rng.normal(size=(n, W, 40)),
        "forecast": rng.normal(size=(n, L, 40)),
        "obs_value": rng.normal(size=(n, W, 40)),
        "obs_error_std": np.ones((n, W, 40)),
        "obs_mask": np.ones((n, W, 40), bool),
        "obs_qc": np.zeros((n, W, 40), "int8"),
        "cost_before": rng.random(n),
        "cost_after": rng.random(n),
        "iterations": np.full(n, 20, "int32"),
    }


def point(k: int):
    return np.datetime64("2026-01-01T00:00") + k * np.timedelta64(6, "h")


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--write", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vardax-bench-store-"))
    rows = []

    with st.CycleStore.create(root / "single.zarr", LAYOUT, "2026-01-01T00:00Z", "PT6H") as s:
        one = cycles(1)
        one = {k: v[0] for k, v in one.items()}
        s.write_cycle(point(0), one)  # warm up
        times = []
        for k in range(1, 1 + 20 * args.repeats):
            t0 = time.perf_counter()
            s.write_cycle(point(k), one)
            times.append(time.perf_counter() - t0)
        rows.append(
            ("write_cycle, one L96-40 cycle", 1e3 * statistics.median(times), "ms per cycle")
        )
        times = []
        for k in range(1, 1 + 20 * args.repeats):  # a rerun: journaled, then applied
            t0 = time.perf_counter()
            s.write_cycle(point(k), one)
            times.append(time.perf_counter() - t0)
        rows.append(
            (
                "write_cycle, rerun of a committed cycle (journaled)",
                1e3 * statistics.median(times),
                "ms per cycle",
            )
        )

    block = cycles(1000)
    times = []
    for r in range(args.repeats):
        with st.CycleStore.create(
            root / f"block{r}.zarr", LAYOUT, "2026-01-01T00:00Z", "PT6H", block=1024
        ) as s:
            t0 = time.perf_counter()
            s.write_cycles(point(0), block, "committed")
            times.append(time.perf_counter() - t0)
    rows.append(
        (
            "write_cycles, block of 1000 in one region write",
            1e3 * statistics.median(times) / 1000,
            "ms per cycle",
        )
    )

    url = root / "big.zarr"
    with st.CycleStore.create(url, LAYOUT, "2026-01-01T00:00Z", "PT6H", block=1024) as s:
        small = {k: v[:1000] for k, v in cycles(1000).items()}
        for b in range(10):
            s.write_cycles(point(1000 * b), small, "committed")
        s.write_cycle(point(7777), {}, "failed")
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            first = s.first_not_committed(point(0), point(9999))
            warm.append(time.perf_counter() - t0)
    assert first == st.parse_time(point(7777)), first
    cold = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        reader = st.CycleStore.open(url)
        reader.first_not_committed(point(0), point(9999))
        cold.append(time.perf_counter() - t0)
    rows.append(
        ("first_not_committed over 10,000 cycles, store open", 1e3 * statistics.median(warm), "ms")
    )
    t0 = time.perf_counter()  # once: it reads every chunk of the store
    result = st.CycleStore.open(url).verify()
    checked = time.perf_counter() - t0
    assert result.ok and result.cycles == 10000, (result.cycles, result.problems[:3])
    rows.append(("verify (every chunk read, every checksum), 10,000 cycles", checked, "s"))
    rows.append(
        ("open + first_not_committed over 10,000 cycles", 1e3 * statistics.median(cold), "ms")
    )

    table = "| operation | median | unit |\n|---|---|---|\n" + "".join(
        f"| {a} | {b:.3g} | {c} |\n" for a, b, c in rows
    )
    print(table)
    if args.write:
        write_section(
            "store",
            f"""## store — cycle store throughput and the resume query (local disk)

`python bench/store.py` on {machine()}; medians of {args.repeats} runs (single-cycle
writes: of {20 * args.repeats}). Layout: L96 K=40, 5 window times, 5 lead times, 40
observations per time, every variable of a cycle written (absent ones as fill values).

{table}""",
        )


if __name__ == "__main__":
    main()
