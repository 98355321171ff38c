"""`ensemble`: the ensemble methods in the pure-JAX loop on DAPPER's sakov2008
configuration — Lorenz-96 K=40, F=8, dt 0.05, every site observed every step, R = I —
3000 cycles, time-mean analysis RMSE after 500, one OSSE draw; and the time per cycle.

    python bench/ensemble.py [--cycles 3000] [--spinup 500] [--only etkf] [--write]
    python bench/ensemble.py --tune     # the inflation grids, on other draws (seeds 11, 12)
    python bench/ensemble.py --dapper /tmp/dapper/bin/python   # DAPPER on the same OSSE
    python bench/ensemble.py --pipeline  # l96-etkf through the pipeline in block mode

With `--dapper PYTHON` (a Python with DAPPER installed; not a project dependency) DAPPER's
own methods (`bench/dapper_side.py`, the issue's N and inflations) run on the same truth
and observations on this machine, and the table gets their RMSE and time per cycle.

Each method's inflation (and the hybrid's static weight and radius) was chosen by `--tune`
(1000 cycles, the worst of seeds 11 and 12) and is scored here on seed 3000.
"""

import argparse
import itertools
import json
import subprocess
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
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
        return vc.LETKF(H, B, R, localisation=loc, rotate=True, **kw), 1, 1
    if method == "ienks":  # Lag = window, Shift = 1: DAPPER's iEnKS
        return vc.IEnKS(MODEL, H, B, R, new_rows=1, **kw), window, 1
    if method == "hybrid_envar":  # back-to-back 4D windows, as the 4DVar it is set against
        loc = vc.Localisation(radius, RING.shape, RING.spacing)
        m = vc.HybridEnVar.build(H, B, R, N, loc, static_weight=static, inflation=kw["inflation"])
        return m, window, window
    raise ValueError(method)


# label -> (method, N, inflation, window, radius, static weight, B scale): inflation and
# static weight and radius by --tune (the worst of seeds 11 and 12)
CONFIGS = {
    "etkf N=24": ("etkf", 24, 1.015, 1, None, None, None),
    "etkf N=10": ("etkf", 10, 1.05, 1, None, None, None),  # DAPPER's, which diverges
    "enkf N=40": ("enkf", 40, 1.045, 1, None, None, None),
    "letkf N=7": ("letkf", 7, 1.03, 1, 4.0, None, None),
    "ienks Lag 4 N=20": ("ienks", 20, 1.01, 4, None, None, None),
    "hybrid_envar 4D N=20": ("hybrid_envar", 20, 1.05, 4, 6.0, 0.05, 0.007),
    "hybrid_envar 4D N=10": ("hybrid_envar", 10, 1.12, 4, 4.0, 0.1, 0.007),
}

TUNE = {  # label -> grids of inflation, static weight, radius
    "etkf N=24": ([1.01, 1.015, 1.02, 1.025, 1.03], [None], [None]),
    "enkf N=40": ([1.03, 1.045, 1.06, 1.08], [None], [None]),
    "letkf N=7": ([1.02, 1.03, 1.04, 1.05, 1.06], [None], [None]),
    "ienks Lag 4 N=20": ([1.0, 1.005, 1.01, 1.02], [None], [None]),
    "hybrid_envar 4D N=20": ([1.05, 1.08, 1.12], [0.05, 0.1, 0.2], [4.0, 6.0]),
    "hybrid_envar 4D N=10": ([1.08, 1.12], [0.1, 0.2], [3.0, 4.0]),
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


def dapper(python: str, cycles: int, spinup: int, seed: int) -> dict:
    """DAPPER's methods on the OSSE of `seed` (the filters' one: window 1, shift 1)."""
    problem = vc.cycled_problem(
        MODEL, H, 1.0, cycles, jax.random.PRNGKey(seed), first_guess_std=0.1
    )
    with tempfile.TemporaryDirectory() as folder:
        np.save(f"{folder}/truth.npy", np.asarray(problem.truth))
        np.save(f"{folder}/obs.npy", np.asarray(problem.obs.values[1:]))
        np.save(f"{folder}/first.npy", np.asarray(problem.first_background))
        side = Path(__file__).with_name("dapper_side.py")
        out = subprocess.run(
            [python, str(side), folder, str(spinup)], capture_output=True, text=True, check=True
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def pipeline(cycles: int) -> dict:
    """`configs/l96-etkf.yaml`, `cycles` cycles from the origin into a fresh store in block
    mode (blocks of 1024, fields chunked by 256): every cycle and its members persisted.
    **Returns** the wall time (compile included, the Prefect server's start-up not) and the
    store's analysis RMSE after 500."""
    import time

    import yaml

    import storage
    import tasks
    from flows import _flows

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as d:
        data = yaml.safe_load((root / "configs" / "l96-etkf.yaml").read_text())
        data["store"] = {"url": f"{d}/store.zarr", "block": 1024, "field_chunk": 256}
        cfg = Path(d) / "etkf.yaml"
        cfg.write_text(yaml.safe_dump(data))
        _flows.simulate_flow(str(cfg), cycles, 0)
        exp = tasks.experiment(cfg)
        last = storage.cycle_id(exp.axis.point(cycles - 1))
        t0 = time.perf_counter()
        out = _flows.cycling_flow(str(cfg), end=last, block=1024)
        wall = time.perf_counter() - t0
        rmse = tasks.store_scores(exp.store_url, exp.truth_url, 500, cycles)["analysis"]
    return {"wall s": wall, "statuses": out["statuses"], "rmse.a": rmse}


def tune(args):
    for label, (infls, statics, radii) in TUNE.items():
        if args.only and not label.startswith(args.only):
            continue
        best = None
        for infl, static, radius in itertools.product(infls, statics, radii):
            cfg = list(CONFIGS[label])
            cfg[2] = infl
            cfg[4] = cfg[4] if radius is None else radius
            cfg[5] = cfg[5] if static is None else static
            # the worst of the draws: a setting that diverges on one is not chosen
            scores = [
                experiment(label, tuple(cfg), 1000, 200, seed, 1)["rmse.a"]
                for seed in args.tune_seeds
            ]
            said = ", ".join(f"{v:.4f}" for v in scores)
            print(f"{label}: inflation {infl} static {static} radius {radius}: {said}", flush=True)
            if best is None or max(scores) < best[0]:
                best = (max(scores), infl, static, radius)
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
    p.add_argument("--tune-seeds", type=int, nargs="+", default=[11, 12])
    p.add_argument("--dapper", default=None, help="a Python with DAPPER installed")
    p.add_argument("--pipeline", action="store_true", help="time l96-etkf through the pipeline")
    p.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = p.parse_args()
    if args.tune:
        return tune(args)
    if args.pipeline:
        result = pipeline(args.cycles)
        print(result)
        if args.write:
            write_section(
                "ensemble-pipeline",
                f"""## ensemble-pipeline — l96-etkf through the pipeline in block mode

`python bench/ensemble.py --pipeline --write` on {machine()}: {args.cycles} cycles of
`configs/l96-etkf.yaml` (ETKF N=24) from the origin into a fresh store, blocks of 1024,
every cycle persisted with its 24 members, spreads and status: **{result["wall s"]:.1f} s**
wall (compile included; the Prefect server's start-up not), {result["statuses"]}; the
store's time-mean analysis RMSE after 500 cycles {result["rmse.a"]:.4f}.
""",
            )
        return None
    theirs = dapper(args.dapper, args.cycles, args.spinup, args.seed) if args.dapper else {}
    rows = []
    for label, cfg in CONFIGS.items():
        if args.only and not label.startswith(args.only):
            continue
        row = experiment(label, cfg, args.cycles, args.spinup, args.seed, args.repeats)
        if theirs:
            d = theirs.get(label, {})
            row["DAPPER rmse.a"] = d.get("rmse.a", "")
            row["DAPPER ms/cycle"] = d.get("ms/cycle", "")
            row["DAPPER ms/cycle, no stats"] = d.get("ms/cycle bare", "")
            row["speed-up"] = d["ms/cycle"] / row["ms/cycle"] if d else ""
            row["speed-up, no stats"] = d["ms/cycle bare"] / row["ms/cycle"] if d else ""
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
after {args.spinup}, OSSE seed {args.seed} (the filters start 0.1 from the truth with an
ensemble of spread 0.1, as DAPPER does); ms/cycle the median of {args.repeats} runs of the
compiled loop (every cycle's records kept). Inflations (and the hybrid's static weight and
radius) chosen by `--tune` on seeds 11 and 12. DAPPER 1.7.1 (`--dapper`) on the same truth and
observations, same machine, with its statistics on and (a no-op `Stats.assess`) off: its
own configurations (ETKF N=24 inflation
1.02, rotations; EnKF N=40 1.06; LETKF N=7 radius 4, 1.04, rotations; iEnKS Lag 4 N=20).
Ours rotate too (ETKF, LETKF: two random Householder reflections in the complement of 1
each cycle, where DAPPER draws a full random orthogonal matrix).
The ienks row is the Lag-4 smoother sliding by one step; the hybrid's are back-to-back
4-step windows, where strong 4DVar reaches 0.28 (the cycled section).

{head}{body}""",
        )


if __name__ == "__main__":
    main()
