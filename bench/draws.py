"""`draws`: each shipped classical config over several draws of its OSSE, against the RMSE it
states — what a stated figure must hold for, since every OSSE is one draw of a chaotic truth
(and a CPU's floating point makes the same seed another draw: run it under
`XLA_FLAGS=--xla_cpu_max_isa=AVX`, with `VARDAX_JAX_CACHE=off`, to see one without FMA).

    python bench/draws.py [--seeds 0 1 2 3 4] [--configs l96-4dvar …] [--qg]
"""

import argparse
from pathlib import Path

import configs
import tasks

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--configs", nargs="*", default=None, help="config stems (default: all)")
    p.add_argument("--qg", action="store_true", help="the QG configs too (minutes each)")
    args = p.parse_args()
    print("| config | states | analysis RMSE per draw | max | gate passed (min) |")
    print("|---|---|---|---|---|")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = configs.load_config(path)
        learned = isinstance(cfg.method, configs.LearnedMethodConfig)
        if learned or (args.configs and path.stem not in args.configs):
            continue
        if path.stem.startswith("qg") and not args.qg:
            continue
        e = cfg.expected
        runs = [
            tasks.reference_scores(str(path), e.spinup_cycles + e.cycles, seed, e.spinup_cycles)
            for seed in args.seeds
        ]
        rmse = [r["analysis"] for r in runs]
        passed = min(float(r["output"].gate.passed.mean()) for r in runs)
        cells = " ".join(f"{x:.4f}" for x in rmse)
        print(f"| {path.stem} | {e.analysis_rmse} | {cells} | {max(rmse):.4f} | {passed:.3f} |")


if __name__ == "__main__":
    main()
