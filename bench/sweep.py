"""`sweep`: a sweep of experiments on a Dask LocalCluster against the same experiments run
one after another in one process — the wall time, and whether the stores agree.

    python bench/sweep.py [--sweep l96-methods|qg-b] [--cycles N] [--workers 2] [--write]

The members are those of `configs/sweeps/<sweep>.yaml` (set-ups on one OSSE), each a
cycling flow in block mode. Both sides run on Prefect's embedded
server (or PREFECT_API_URL); the OSSE is simulated before the clock starts. The Dask side
includes starting the LocalCluster and its workers' imports and compiles.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
import yaml
from _common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweep", default="l96-methods", help="a sweep of configs/sweeps/")
    p.add_argument("--cycles", type=int, default=None, help="default: the sweep file's")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()

    import configs
    import storage
    import tasks
    from flows import _distributed, _flows

    spec = yaml.safe_load((ROOT / "configs" / "sweeps" / f"{args.sweep}.yaml").read_text())
    args.cycles = args.cycles or spec["cycles"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        spec["base"] = str(ROOT / spec["base"])
        spec["folder"] = str(d / "sweep")
        spec["cycles"] = args.cycles
        spec["dask"] = {"n_workers": args.workers, "threads_per_worker": 1}
        sweep_file = d / "sweep.yaml"
        sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        _, paths = _distributed.write_member_configs(sweep_file)
        first = next(iter(paths.values()))
        _flows.simulate_flow(first, args.cycles, spec.get("seed", 0))

        # one by one, in this process, into other stores beside the same OSSE
        _, members = configs.load_sweep(sweep_file)
        t0 = time.perf_counter()
        serial_urls = {}
        for name, data in members.items():
            data["store"]["url"] = str(d / "sweep" / f"serial-{name}.zarr")
            path = d / f"serial-{name}.yaml"
            path.write_text(yaml.safe_dump(data))
            end = storage.cycle_id(tasks.experiment(path).axis.point(args.cycles - 1))
            _flows.cycling_flow(str(path), end=end, block=spec["block"])
            serial_urls[name] = data["store"]["url"]
        serial_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        results = _distributed.run_sweep(str(sweep_file))
        dask_s = time.perf_counter() - t0

        diff = 0.0
        for name, url in serial_urls.items():
            a = xr.open_zarr(str(d / "sweep" / f"{name}.zarr")).analysis.values[: args.cycles]
            b = xr.open_zarr(url).analysis.values[: args.cycles]
            diff = max(diff, float(np.max(np.abs(a - b))))
    rows = [
        "| members | cycles each | one by one s | Dask s | speed-up | max abs Δ analysis |",
        "|---|---|---|---|---|---|",
        f"| {len(members)} | {args.cycles} | {serial_s:.1f} | {dask_s:.1f} | "
        f"{serial_s / dask_s:.2f}× | {diff:.1e} |",
    ]
    scores = ["| member | method | analysis RMSE |", "|---|---|---|"] + [
        f"| {r['experiment']} | {r['method']} | {r['rmse_analysis']:.4f} |" for r in results
    ]
    print("\n".join(rows + [""] + scores))
    if args.write:
        write_section(
            f"sweep-{args.sweep}",
            "\n".join(
                [
                    f"## sweep {args.sweep} — experiments in parallel on a Dask LocalCluster",
                    "",
                    f"`python bench/sweep.py --sweep {args.sweep} --cycles {args.cycles} "
                    f"--workers {args.workers}` on {machine()}",
                    "",
                    f"The members of `configs/sweeps/{args.sweep}.yaml` on one OSSE, each a "
                    "cycling flow in block mode: one after another in one process, then as "
                    f"Dask tasks on a LocalCluster of {args.workers} worker processes "
                    "(Prefect's Dask task runner; the cluster's start, imports and compiles "
                    "included). One run each (a sweep is minutes, not a micro-benchmark). "
                    "`max abs Δ`: the largest difference between a member's analyses on Dask "
                    "and one by one (0: bitwise equal). Dask's workers run single-threaded "
                    "(its nanny sets OMP_NUM_THREADS=1), so XLA's multi-threaded reductions "
                    "(large FFTs, dot products) may round differently than in a 2-thread "
                    "process.",
                    "",
                    *rows,
                    "",
                    *scores,
                    "",
                ]
            ),
        )


if __name__ == "__main__":
    main()
