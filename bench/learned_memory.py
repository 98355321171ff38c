"""`learned_memory`: peak memory of FourDVarNet's training gradient against the number of
solver steps K, for the three gradient modes (unrolled, one-step, implicit).

    python bench/learned_memory.py [--steps 2 4 8 16 32] [--write]

XLA's own account of the compiled gradient (`compiled.memory_analysis()`: temporary
buffers, which hold what back-propagation keeps, plus arguments and outputs) on a batch of
two-level Lorenz-96 windows (T=81, N=72) — no timing, so it does not depend on the load of
the machine.
"""

import argparse
from pathlib import Path

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from _common import machine, write_section  # noqa: E402

import vardax_core as vc  # noqa: E402


def network(mode: str, K: int, batch: vc.Batch1D):
    T, N = batch.target.shape[1:]
    return vc.FourDVarNet1D(
        N,
        T,
        key=jax.random.PRNGKey(0),
        n_solver_steps=K,
        gradient_mode=mode,
        latent_dim=16,
        hidden_dim=16,
        scale=5.0,
        obs_scale=5.0,
    )


def windows(batch_size: int):
    """A batch of two-level Lorenz-96 windows and their observation operator."""
    probs = jax.vmap(lambda k: vc.l96_two_level_window_problem(k))(
        jax.random.split(jax.random.PRNGKey(0), batch_size)
    )
    T = probs.n_assim + 1
    H = vc.SubsetObs(range(8), 72)  # the slow variables, as the problem observes
    batch = vc.Batch1D(
        input=probs.obs.values,
        mask=probs.obs.mask,
        target=probs.truth[:, :T],
        background=jnp.zeros_like(probs.truth[:, :T]),
    )
    return batch, H


def peak_bytes(mode: str, K: int, batch: vc.Batch1D, H) -> int:
    net = network(mode, K, batch)

    def loss(n):
        return vc.fourdvarnet_loss(n, batch, H)[0]

    params, static = eqx.partition(net, eqx.is_array)
    grad = jax.jit(lambda p: eqx.filter_grad(loss)(eqx.combine(p, static)))
    compiled = grad.lower(params).compile()
    mem = compiled.memory_analysis()
    return mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes


def device_peak(mode: str, K: int, batch_size: int) -> float:
    """MiB: the device's peak memory in a fresh process that runs the gradient once (on a
    GPU; CPU devices keep no memory statistics)."""
    import subprocess
    import sys

    code = (
        "import jax, learned_memory as lm, vardax_core as vc, equinox as eqx;"
        f"b, H = lm.windows({batch_size});"
        f"net = lm.network('{mode}', {K}, b);"
        "g = eqx.filter_jit(eqx.filter_grad(lambda n: vc.fourdvarnet_loss(n, b, H)[0]))(net);"
        "jax.block_until_ready(g);"
        "print(jax.devices()[0].memory_stats()['peak_bytes_in_use'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 2**20


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--device-peak",
        action="store_true",
        help="measure the GPU's peak memory in a fresh process per case (needs a GPU)",
    )
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    batch, H = windows(args.batch)
    rows = {}
    for mode in vc.GRADIENT_MODES:
        if args.device_peak:
            rows[mode] = [device_peak(mode, K, args.batch) for K in args.steps]
        else:
            rows[mode] = [peak_bytes(mode, K, batch, H) / 2**20 for K in args.steps]
        print(mode, [f"{v:.1f} MiB" for v in rows[mode]], flush=True)
    head = "| gradient mode | " + " | ".join(f"K={K}" for K in args.steps) + " | K=max / K=min |"
    lines = [head, "|---" * (len(args.steps) + 2) + "|"]
    for mode, values in rows.items():
        lines.append(
            f"| {mode} | "
            + " | ".join(f"{v:.1f}" for v in values)
            + f" | {values[-1] / values[0]:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write and args.device_peak:
        write_section(
            "learned_memory_device",
            f"""## learned_memory (device) — the same, measured on a GPU

`python bench/learned_memory.py --device-peak --steps {" ".join(map(str, args.steps))} --batch {args.batch}` on {machine()}.
MiB: the device's `peak_bytes_in_use` in a fresh process that computes the training
gradient once (inputs, parameters and XLA's workspace included).

{table}
""",
        )
    elif args.write:
        write_section(
            "learned_memory",
            f"""## learned_memory — FourDVarNet's training memory against solver steps

`python bench/learned_memory.py --steps {" ".join(map(str, args.steps))} --batch {args.batch}` on {machine()}.
MiB of XLA's memory analysis of the compiled gradient of the training loss (temporaries +
arguments + outputs) for a batch of {args.batch} two-level Lorenz-96 windows (T=81, N=72),
FourDVarNet1D with a bilinear prior (latent 16) and a 16-channel ConvLSTM. Unrolled
back-propagation keeps every step's activations (O(K)); one-step differentiation
(`OneStepAdjoint`) and the implicit mode keep one step's (O(1)).

{table}
""",
        )


if __name__ == "__main__":
    main()
