"""Measures what an example config reaches: the pipeline's own cycle (the experiment's
`vardax_core.Cycle`: background check, method, gate) cycled by `vardax_core.run_cycles` on
the OSSE that `vardax-cycle simulate` writes (`tasks.reference_scores`), time-mean RMSE at
the window ends over `expected.cycles` cycles after `expected.spinup_cycles`, for several
OSSE draws.

    python examples/ks/measure.py examples/ks/configs/ks-3dvar.yaml --seeds 0 1 2 3 4
"""

import argparse

import tasks


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("configs", nargs="+", help="experiment YAML files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="OSSE draws")
    args = p.parse_args()
    for config in args.configs:
        exp = tasks.experiment(config)
        spinup, cycles = exp.cfg.expected.spinup_cycles, exp.cfg.expected.cycles
        for seed in args.seeds:
            s = tasks.reference_scores(config, spinup + cycles, seed=seed, spinup=spinup)
            a, b = s["analysis"], s["background"]
            print(f"{exp.name} seed {seed}: analysis {a:.4f}, background {b:.4f} ({a / b:.3f})")


if __name__ == "__main__":
    main()
