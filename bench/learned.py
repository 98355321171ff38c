"""`learned`: the learned methods on the seeds' single-window problems (Lorenz-63, seeds
001/004; two-level Lorenz-96, seed 002), against strong 4DVar on the same problems.

    python bench/learned.py [--problem l63 l96-2l] [--test 32] [--write]

Each network is trained on windows simulated by the problem's own generator (other keys
than the test problems), then scored like bench/window.py: the analysis over the window,
then a free forecast from its last state; rmse_assim / rmse_forecast / rmse_total are means
over the test problems (keys 0…test−1; keys 0–3 are bench/window.py's). The amortized
posterior's calibration is checked by SBC on 256 more problems.
"""

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from _common import machine, write_section  # noqa: E402

import vardax_core as vc  # noqa: E402

METHODS = ("strong_4dvar", "fourdvarnet", "amortized")
CACHE = Path(__file__).resolve().parents[1] / "runs" / "bench"

SETTINGS = {
    "l63": dict(
        make=vc.l63_window_problem,
        mean=jnp.array([0.0, 0.0, 23.5]),
        scale=jnp.sqrt(jnp.array([62.0, 77.0, 73.0])),
        fvn=dict(latent_dim=16, hidden_dim=16, n_solver_steps=15),
        fvn_train=dict(n=2048, steps=2000, lr=3e-3, batch=64, end_weight=4.0),
        amort=dict(context_dim=64, hidden_dim=256, depth=2),
        amort_train=dict(n=2048, steps=3000, lr=2e-3, batch=128),
    ),
    "l96-2l": dict(
        make=vc.l96_two_level_window_problem,
        mean=None,
        scale=None,
        fvn=dict(latent_dim=32, hidden_dim=16, n_solver_steps=8),
        fvn_train=dict(n=512, steps=600, lr=3e-3, batch=32, end_weight=1.0),
        amort=dict(context_dim=128, hidden_dim=384, depth=2),
        amort_train=dict(n=1024, steps=1500, lr=5e-4, batch=128),
    ),
}


def problems(make, seed, n):
    """`n` problems, less the rare ones whose truth blew up from its random start (2 in
    1024 for the two-level model's training keys)."""
    probs = jax.vmap(make)(jax.random.split(jax.random.PRNGKey(seed), n))
    ok = jnp.all(jnp.isfinite(probs.truth), axis=(1, 2))
    if bool(jnp.all(ok)):
        return probs
    print(f"dropped {int(n - ok.sum())} of {n} problems whose truth is not finite", flush=True)
    return jax.tree_util.tree_map(
        lambda a: a[ok] if eqx.is_array(a) and a.shape[:1] == (n,) else a, probs
    )


def as_batch(probs) -> vc.Batch1D:
    T = probs.n_assim + 1
    return vc.Batch1D(
        input=probs.obs.values,
        mask=probs.obs.mask,
        target=probs.truth[:, :T],
        background=probs.background,
    )


def first(probs):
    return jax.tree_util.tree_map(lambda a: a[0] if eqx.is_array(a) else a, probs)


def scores(probs, analyses):
    """Mean of the seeds' three scores (and the slow/fast blocks for the two-level model)."""
    model = first(probs).model
    n_fc = probs.truth.shape[1] - 1 - probs.n_assim

    @jax.jit
    def one(analysis, truth):
        forecast = model.rollout(analysis[-1], n_fc)
        traj = jnp.concatenate([analysis, forecast[1:]])
        out = vc.assim_forecast_rmse(traj, truth, probs.n_assim)
        if isinstance(model, vc.Lorenz96TwoLevel):
            out |= {
                f"rmse_{k}": v
                for k, v in vc.block_rmse(
                    traj, truth, {"slow": model.slow, "fast": model.fast}
                ).items()
            }
        return out

    rows = jax.lax.map(lambda a: one(*a), (analyses, probs.truth))
    out = {k: float(jnp.mean(v)) for k, v in rows.items()}
    # the first four problems are bench/window.py's (keys 0–3)
    out |= {f"{k} (0–3)": float(jnp.mean(v[:4])) for k, v in rows.items() if k == "rmse_total"}
    return out


def strong_4dvar(probs):
    p0 = first(probs)
    method = vc.StrongFourDVar(p0.model, p0.obs_operator, p0.prior_cov, p0.obs_cov)
    run = jax.jit(lambda b, y, m: method(b, vc.ObsWindow(y, m)).trajectory)
    return jax.lax.map(lambda a: run(*a), (probs.background, probs.obs.values, probs.obs.mask))


def normalisation(s, train):
    if s["mean"] is not None:
        return s["mean"], s["scale"]
    return jnp.mean(train.target, axis=(0, 1)), jnp.std(train.target, axis=(0, 1))


def log(prefix, t0):
    def callback(row):
        print(prefix, row, f"{time.perf_counter() - t0:.0f}s", flush=True)

    return callback


def run_problem(name, n_test, sbc_cases, methods):
    s = SETTINGS[name]
    keys = jnp.stack([jax.random.PRNGKey(k) for k in range(n_test)])
    test = jax.vmap(s["make"])(keys)
    p0 = first(test)
    rows, extra = {}, {}
    if "strong_4dvar" in methods:
        rows["strong_4dvar"] = scores(test, strong_4dvar(test)) | {"train_s": 0.0}
        print(name, "strong_4dvar", rows["strong_4dvar"], flush=True)
    ft = s["fvn_train"]
    train = as_batch(problems(s["make"], 1000, ft["n"]))
    val = as_batch(problems(s["make"], 2000, 64))
    mean, scale = normalisation(s, train)
    obs_scale = jnp.sqrt(p0.obs_cov.diagonal() + jnp.mean(scale**2))
    if "fourdvarnet" in methods:
        rows["fourdvarnet"] = train_fourdvarnet(name, s, test, train, val, mean, scale, obs_scale)
    if "amortized" in methods:
        rows["amortized"], extra = train_amortized(
            name, s, test, val, mean, scale, obs_scale, sbc_cases
        )
    return rows, extra


def train_fourdvarnet(name, s, test, train, val, mean, scale, obs_scale):
    p0 = first(test)
    H = p0.obs_operator
    T, n = test.n_assim + 1, p0.model.state_size
    ft = s["fvn_train"]
    net = vc.FourDVarNet1D(
        n, T, key=jax.random.PRNGKey(0), mean=mean, scale=scale, obs_scale=obs_scale, **s["fvn"]
    )
    t0 = time.perf_counter()
    net, _ = vc.fit(
        net,
        train,
        steps=ft["steps"],
        learning_rate=ft["lr"],
        batch_size=ft["batch"],
        validation=val,
        obs_operator=H,
        every=100,
        callback=log(f"{name} fvn", t0),
        end_weight=ft["end_weight"],
    )
    train_s = time.perf_counter() - t0
    solve = eqx.filter_jit(lambda net, b: net(b, H))
    row = scores(test, solve(net, as_batch(test))) | {"train_s": train_s}
    print(name, "fourdvarnet", row, flush=True)
    return row


def train_amortized(name, s, test, val, mean, scale, obs_scale, sbc_cases):
    p0 = first(test)
    H = p0.obs_operator
    T, n = test.n_assim + 1, p0.model.state_size
    at = s["amort_train"]
    train = as_batch(problems(s["make"], 3000, at["n"]))
    post = vc.amortized_posterior(
        (T, H.obs_size),
        (T, n),
        key=jax.random.PRNGKey(0),
        mean=mean,
        scale=scale,
        obs_scale=obs_scale,
        **s["amort"],
    )
    t0 = time.perf_counter()
    post, _ = vc.fit(
        post,
        train,
        steps=at["steps"],
        learning_rate=at["lr"],
        batch_size=at["batch"],
        validation=val,
        every=250,
        callback=log(f"{name} amortized", t0),
    )
    train_s = time.perf_counter() - t0
    row = scores(test, eqx.filter_jit(lambda p, b: p(b))(post, as_batch(test)))
    row |= {"train_s": train_s}
    print(name, "amortized", row, flush=True)
    sbc_batch = as_batch(problems(s["make"], 4000, sbc_cases))
    sbc = vc.simulation_based_calibration(
        post.sample, sbc_batch.target, sbc_batch, jax.random.PRNGKey(9), n_samples=99
    )
    mean_std = float(jnp.mean(post.posterior(sbc_batch)[1]))
    err = float(vc.rmse(post(sbc_batch), sbc_batch.target))
    print(name, sbc.summary(), f"mean std {mean_std:.3f}, rmse {err:.3f}", flush=True)
    return row, {"sbc": sbc.summary(), "sbc_passed": sbc.passed, "mean_std": mean_std, "rmse": err}


def table(rows):
    cols = [c for c in next(iter(rows.values())) if c != "train_s"] + ["train_s"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{row[c]:.0f}" if c == "train_s" else f"{row[c]:.3f}" for c in cols)
            + " |"
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--problem", nargs="+", default=["l63", "l96-2l"], choices=list(SETTINGS))
    p.add_argument(
        "--test", type=int, nargs="+", default=[32, 16], help="test problems, per --problem"
    )
    p.add_argument("--sbc", type=int, default=256)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--write", action="store_true")
    p.add_argument(
        "--table-only", action="store_true", help="no runs: the table from the saved rows"
    )
    args = p.parse_args()
    sections = []
    CACHE.mkdir(parents=True, exist_ok=True)
    tests = dict(zip(args.problem, args.test * len(args.problem), strict=False))
    for name in args.problem:
        n_test = tests[name]
        new, extra = (
            ({}, {}) if args.table_only else run_problem(name, n_test, args.sbc, args.methods)
        )
        # rows of earlier runs of the other methods (same --test) are kept
        cache = CACHE / f"learned-{name}-{n_test}.json"
        saved = json.loads(cache.read_text()) if cache.exists() else {"rows": {}, "extra": {}}
        saved["rows"] |= new
        saved["extra"] |= extra
        cache.write_text(json.dumps(saved, indent=1))
        rows = {m: saved["rows"][m] for m in METHODS if m in saved["rows"]}
        extra = saved["extra"]
        s = SETTINGS[name]
        text = (
            f"### {name} ({n_test} test problems)\n\nFourDVarNet {s['fvn']}, trained on {s['fvn_train']}; amortized "
            f"{s['amort']}, trained on {s['amort_train']} (`n` windows, `steps` Adam steps, "
            f"cosine-decayed `lr`, minibatches of `batch`).\n\n{table(rows)}\n\n"
            f"Amortized posterior, {extra.get('sbc', 'not run')}; its mean predictive std "
            f"{extra.get('mean_std', float('nan')):.3f} against its RMSE "
            f"{extra.get('rmse', float('nan')):.3f} on those problems.\n"
        )
        print(text, flush=True)
        sections.append(text)
    if args.write:
        write_section(
            "learned",
            f"""## learned — FourDVarNet and the amortized posterior on the seeds' window problems

`python bench/learned.py --problem {" ".join(args.problem)} --test {" ".join(map(str, args.test))} --sbc {args.sbc}` on {machine()}.
Scores are means over the test problems (keys 0…n−1; `rmse_total (0–3)`: over bench/window.py's
keys 0–3 only); the networks never saw them (training keys from 1000, validation 2000, amortized
3000, SBC 4000). Each method's row comes from its own run of this script (`--methods`; the
rows are kept in `runs/bench/` and the table is rebuilt from them). Strong 4DVar (Levenberg–Marquardt, the same prior) on the same problems
for reference. `train_s`: training wall time (these runs shared the 2 CPUs with other
benchmarks, so it is an upper bound).

Seed figures: L63 FourDVarNet total 1.707 (assim 6.452), amortized total 0.422 (assim
0.316); L96-2L FourDVarNet NaN, amortized 2.302, OI 2.055.

{chr(10).join(sections)}""",
        )


if __name__ == "__main__":
    main()
