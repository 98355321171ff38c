"""`cycled`: pure-JAX cycling (no Prefect, no I/O) on Lorenz-96 K=40, F=8, dt=0.05, all 40
sites observed every step with R = I — DAPPER's reference configuration for 3D-Var
(0.417) and 4D-Var (window 4: 0.341, ~84 ms per cycle).

    python bench/cycled.py [--cycles 3000] [--spinup 500] [--write]
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optimistix as optx  # noqa: E402
from _common import machine, median, timed, write_section  # noqa: E402

import vardax_core as vc  # noqa: E402


def setup(n_cycles_total: int, window: int, shift: int, seed: int):
    model = vc.Lorenz96(K=40, F=8.0, dt=0.05)
    H = vc.SubsetObs(range(40), 40)
    n_steps = (n_cycles_total - 1) * shift + window
    problem = vc.cycled_problem(model, H, 1.0, n_steps, jax.random.PRNGKey(seed))
    climate = vc.nature_run(model, jax.random.PRNGKey(seed + 1), 20_000, 1000)
    return model, H, problem, climate


# label -> (B scale of the climatological covariance, window, shift); scales tuned in RESULTS.md
CONFIGS = {"3dvar": (0.02, 1, 1), "4dvar": (0.007, 4, 4), "4dvar-slide": (0.005, 4, 1)}


def experiment(name, scale, window, shift, args, minimiser=None):
    n_total = args.spinup + args.cycles
    model, H, problem, climate = setup(n_total, window, shift, args.seed)
    B = vc.climatological_covariance(climate, scale)
    R = vc.ScaledIdentityCovariance(40, 1.0)
    if name == "3dvar":
        method = vc.ThreeDVar(H, B, R, minimiser=minimiser or optx.BFGS(rtol=1e-6, atol=1e-6))
    else:
        method = vc.StrongFourDVar(
            model, H, B, R, minimiser=minimiser or optx.BFGS(rtol=1e-6, atol=1e-6), max_steps=200
        )

    @jax.jit
    def run(first_background, obs):
        return vc.run_cycles(model, method, first_background, obs, n_total, window, shift)

    out, first, runs = timed(
        run, problem.first_background, problem.obs, repeats=max(args.repeats, 1)
    )
    times = vc.analysis_times(n_total, window, shift)
    truth = problem.truth[times]
    keep = slice(args.spinup, None)
    rmse_a = vc.rmse_t(out.analysis.trajectory[:, -1][keep], truth[keep])
    rmse_f = vc.rmse_t(out.background[:, -1][keep], truth[keep])
    ok = out.analysis.result == vc.AnalysisResult.successful
    return {
        "method": name,
        "window": window,
        "shift": shift,
        "B scale": scale,
        "rmse.a": float(jnp.mean(rmse_a)),
        "rmse.f": float(jnp.mean(rmse_f)),
        "ms/cycle": 1e3 * median(runs) / n_total,
        "compile s": first - median(runs),
        "iters": float(jnp.mean(out.analysis.iterations[keep])),
        "failed": int(n_total - jnp.sum(ok)),
    }


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cycles", type=int, default=3000)
    p.add_argument("--spinup", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--only", default=None, help="3dvar, 4dvar or 4dvar-slide")
    p.add_argument("--scale", type=float, default=None)
    p.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = p.parse_args()
    rows = []
    for label, (scale, window, shift) in CONFIGS.items():
        if args.only and label != args.only:
            continue
        row = experiment(
            "3dvar" if label == "3dvar" else "4dvar", args.scale or scale, window, shift, args
        )
        row["method"] = label
        rows.append(row)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    if args.write:
        head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
        body = "".join(
            "| "
            + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values())
            + " |\n"
            for r in rows
        )
        write_section(
            "cycled",
            f"## cycled — L96-40 pure-JAX cycling\n\n`python bench/cycled.py --cycles {args.cycles} --spinup {args.spinup}` on {machine()}\n\n{head}{body}",
        )


if __name__ == "__main__":
    main()
