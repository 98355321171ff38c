"""`ensemble`: the ensemble methods in the pure-JAX loop on DAPPER's sakov2008
configuration — Lorenz-96 K=40, F=8, dt 0.05, every site observed every step, R = I —
3000 cycles, time-mean analysis RMSE after 500, one OSSE draw; and the time per cycle.

    python bench/ensemble.py [--cycles 3000] [--spinup 500] [--only etkf] [--write]
    python bench/ensemble.py --tune     # the inflation grids, on another draw (seed 11)

Each method's inflation (and the hybrid's static weight) was chosen by `--tune` on seed
11 (1000 cycles) and is scored here on seed 3000.
"""

import argparse
import itertools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from _common import machine, median, timed, write_section  # noqa: E402

import vardax_core as vc  # noqa: E402

MODEL = vc.Lorenz96(K=40, F=8.0, dt=0.05)
H = vc.SubsetObs(range(40), 40)
R = vc.ScaledIdentityCovariance(40, 1.0)
RING = vc.Localisation.of(MODEL, 1.0)
START = vc.ScaledIdentityCovariance(40, 0.01)  # the first ensemble: tight, as DAPPER starts


def _static_b(scale: float):
    climate = vc.nature_run(MODEL, jax.random.PRNGKey(12), 20_000, 1000)
    return vc.climatological_covariance(climate, scale, 0.0)


def build(method: str, N: int, infl: float, window: int, radius=None, static=None, b=None):
    """`(vardax_core method, window, shift)` of a configuration."""
    B = vc.ScaledIdentityCovariance(40, 1.0) if b is None else _static_b(b)
    kw = {"members": N, "inflation": vc.Inflation(infl)}
    if method == "etkf":
        return vc.ETKF(H, B, R, rotate=True, **kw), 1, 1
    if method == "enkf":
        return vc.EnKF(H, B, R, **kw), 1, 1
    if method == "letkf":
        loc = vc.Localisation(radius, RING.shape, RING.spacing)
        return vc.LETKF(H, B, R, localisation=loc, **kw), 1, 1
    if method == "ienks":  # Lag = window, Shift = 1: DAPPER's iEnKS
        return vc.IEnKS(MODEL, H, B, R, new_rows=1, **kw), window, 1
    if method == "hybrid_envar":  # back-to-back 4D windows, as the 4DVar it is set against
        loc = vc.Localisation(radius, RING.shape, RING.spacing)
        m = vc.HybridEnVar.build(H, B, R, N, loc, static_weight=static, inflation=kw["inflation"])
        return m, window, window
    raise ValueError(method)


# label -> (method, N, inflation, window, radius, static weight, B scale): inflation and
# static weight by --tune on seed 11
CONFIGS = {
    "etkf N=24": ("etkf", 24, 1.015, 1, None, None, None),
    "etkf N=10": ("etkf", 10, 1.05, 1, None, None, None),  # DAPPER's, which diverges
    "enkf N=40": ("enkf", 40, 1.045, 1, None, None, None),
    "letkf N=7": ("letkf", 7, 1.03, 1, 4.0, None, None),
    "ienks Lag 4 N=20": ("ienks", 20, 1.01, 4, None, None, None),
    "hybrid_envar 4D N=20": ("hybrid_envar", 20, 1.08, 4, 4.0, 0.1, 0.007),
    "hybrid_envar 4D N=10": ("hybrid_envar", 10, 1.08, 4, 4.0, 0.1, 0.007),  # N=20's
}

TUNE = {  # label -> grids of (inflation, static weight)
    "etkf N=24": ([1.01, 1.015, 1.02, 1.03], [None]),
    "enkf N=40": ([1.03, 1.045, 1.06, 1.08], [None]),
    "letkf N=7": ([1.02, 1.03, 1.04, 1.06], [None]),
    "ienks Lag 4 N=20": ([1.0, 1.005, 1.01, 1.02], [None]),
    "hybrid_envar 4D N=20": ([1.03, 1.05, 1.08, 1.12], [0.1, 0.3, 0.5]),
    "hybrid_envar 4D N=10": ([1.05, 1.08, 1.12], [0.3, 0.5, 0.7]),
}


def experiment(label, cfg, n_total, spinup, seed, repeats):
    method_name, N, infl, window, radius, static, b = cfg
    method, window, shift = build(method_name, N, infl, window, radius, static, b)
    n_steps = (n_total - 1) * shift + window
    problem = vc.cycled_problem(
        MODEL, H, 1.0, n_steps, jax.random.PRNGKey(seed), first_guess_std=0.1
    )
    first = vc.initial_ensemble(problem.first_background, START, vc.cycle_key(0, 0), N)
    cycle = vc.Cycle(MODEL, method, window=window)

    @jax.jit
    def run(first, obs):
        return vc.run_cycles(cycle, first, obs, n_total, shift)

    out, compiled, runs = timed(run, first, problem.obs, repeats=repeats)
    scores = vc.cycle_scores(out, problem.truth, window, shift, spinup=spinup)
    spread = jnp.mean(jnp.std(out.accepted_ensemble[spinup:, :, -1], axis=1, ddof=1))
    return {
        "config": label,
        "inflation": infl,
        "static": static if static is not None else "",
        "rmse.a": float(scores["analysis"]),
        "rmse.f": float(scores["background"]),
        "spread.a": float(spread),
        "ms/cycle": 1e3 * median(runs) / n_total,
        "compile s": compiled - median(runs),
    }


def tune(args):
    for label, (infls, statics) in TUNE.items():
        if args.only and not label.startswith(args.only):
            continue
        best = None
        for infl, static in itertools.product(infls, statics):
            cfg = list(CONFIGS[label])
            cfg[2], cfg[5] = infl, static if static is not None else cfg[5]
            row = experiment(label, tuple(cfg), 1000, 200, 11, 1)
            print(f"{label}: inflation {infl} static {static}: {row['rmse.a']:.4f}", flush=True)
            if best is None or row["rmse.a"] < best[0]:
                best = (row["rmse.a"], infl, static)
        print(f"== {label}: best {best}", flush=True)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cycles", type=int, default=3000)
    p.add_argument("--spinup", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=3000)
    p.add_argument("--only", default=None, help="a config label's start, e.g. letkf")
    p.add_argument("--tune", action="store_true")
    p.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = p.parse_args()
    if args.tune:
        return tune(args)
    rows = []
    for label, cfg in CONFIGS.items():
        if args.only and not label.startswith(args.only):
            continue
        row = experiment(label, cfg, args.cycles, args.spinup, args.seed, args.repeats)
        rows.append(row)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    if args.write:
        head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
        body = "".join(
            "| "
            + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values())
            + " |\n"
            for r in rows
        )
        write_section(
            "ensemble",
            f"""## ensemble — DAPPER's sakov2008 (L96-40), ensemble methods in the pure-JAX loop

`python bench/ensemble.py --write` on {machine()}: {args.cycles} cycles, RMSE time-mean
after {args.spinup}, OSSE seed {args.seed}; ms/cycle the median of {args.repeats} runs of the
compiled loop. Inflations (and the hybrid's static weight) chosen by `--tune` on seed 11.

{head}{body}""",
        )


if __name__ == "__main__":
    main()
