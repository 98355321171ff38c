"""Measures what an example config reaches, with vardax_core alone (no pipeline): the
OSSE the pipeline draws (`configs.registry.osse_problem`), the same background check,
method and gate, cycled by `vardax_core.run_cycles`, scored by `vardax_core.cycle_scores`
over `expected.cycles` cycles after `expected.spinup_cycles`.

    JAX_PLATFORMS=cpu python examples/ks/measure.py examples/ks/configs/ks-3dvar.yaml --seeds 0 1 2

It reads the config's keys itself (those these configs use), so it runs before and
without vardax-cycle's plugin loading.
"""

import argparse
import time
from importlib.metadata import entry_points

import equinox as eqx
import jax
import optimistix as optx
import yaml

import vardax_core as vc

jax.config.update("jax_enable_x64", True)

MINIMISERS = {
    "bfgs": optx.BFGS,
    "lbfgs": optx.LBFGS,
    "nonlinear_cg": optx.NonlinearCG,
    "levenberg_marquardt": optx.LevenbergMarquardt,
}


def plugin(group: str, name: str):
    (ep,) = entry_points(group=group, name=name)
    return ep.load()


def covariance(spec: dict, model) -> vc.AbstractCovariance:
    n = model.state_size
    if spec["kind"] == "spectral":
        return vc.SpectralCovariance(model.state_shape, spec["length_scale"], spec["variance"])
    if spec["kind"] == "periodic":
        kernel = spec.get("kernel", "gaussian")
        return vc.periodic_covariance(n, spec["length_scale"], spec["variance"], kernel)
    if spec["kind"] == "scaled_identity":
        return vc.ScaledIdentityCovariance(n, spec["variance"])
    raise ValueError(f"measure.py does not build prior_cov kind {spec['kind']}")


def build(cfg: dict):
    """`(model, H, cycle, window)` as the pipeline builds them from the config."""
    model = plugin("vardax_cycle.models", cfg["model"]["name"])(**cfg["model"].get("params", {}))
    o = cfg["observations"]
    every = o["locations"]
    locations = list(range(every.get("offset", 0), model.state_size, every["every"]))
    op = o["operator"]
    H = plugin("vardax_cycle.operators", op["name"])(
        locations=locations, state_size=model.state_size, **op.get("params", {})
    )
    m = cfg["method"]
    B = covariance(m["prior_cov"], model)
    R = vc.ScaledIdentityCovariance(H.obs_size, o["error_std"] ** 2)
    kw = {"max_steps": m.get("max_steps", 500)}
    if m.get("minimiser"):
        kw["minimiser"] = MINIMISERS[m["minimiser"]](
            rtol=m.get("rtol", 1e-6), atol=m.get("atol", 1e-6)
        )
    if m["name"] == "3dvar":
        method = vc.ThreeDVar(H, B, R, **kw)
    elif m["name"] == "strong_4dvar":
        method = vc.StrongFourDVar(model, H, B, R, **kw)
    else:
        raise ValueError(f"measure.py does not build method {m['name']}")
    g, qc = cfg.get("gates", {}), o.get("qc", {})
    gate = vc.Gate.for_method(
        method,
        chi2_dof_bounds=tuple(g.get("chi2_dof", (0.05, 20.0))),
        increment_sigma=g.get("increment_sigma", 10.0),
    )
    check = vc.BackgroundCheck(
        H, o["error_std"], qc.get("background_std", 1.0), qc.get("gross_error_k", 5.0)
    )
    window, leads = cfg["cycling"]["window_steps"], cfg["cycling"].get("lead_steps", [])
    cycle = vc.Cycle(model, method, gate=gate, check=check, window=window, leads=leads)
    return model, H, cycle, window


def measure(cfg: dict, seed: int) -> dict:
    model, H, cycle, window = build(cfg)
    c, e = cfg["cycling"], cfg.get("expected", {})
    spinup = e.get("spinup_cycles", 20)
    n_cycles = spinup + e.get("cycles", 100)
    problem = vc.cycled_problem(
        model,
        H,
        cfg["observations"]["error_std"],
        n_cycles * window,
        jax.random.PRNGKey(seed),
        spinup_steps=c.get("spinup_steps", 1000),
        first_guess_std=c.get("first_guess_std", 1.0),
        obs_every=cfg["observations"].get("every_steps", 1),
    )
    out = eqx.filter_jit(vc.run_cycles)(cycle, problem.first_background, problem.obs, n_cycles)
    scores = vc.cycle_scores(out, problem.truth, window, spinup=spinup)
    return {
        "analysis": float(scores["analysis"]),
        "background": float(scores["background"]),
        "gate_pass": float(out.gate.passed.mean()),
        "truth_std": float(problem.truth.std()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    for seed in args.seeds:
        start = time.perf_counter()
        s = measure(cfg, seed)
        print(
            f"{cfg['experiment']} seed {seed}: analysis {s['analysis']:.4f}, background "
            f"{s['background']:.4f} (ratio {s['analysis'] / s['background']:.3f}), gate "
            f"passed {s['gate_pass']:.3f}, truth std {s['truth_std']:.3f}, "
            f"{time.perf_counter() - start:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
