"""Helpers shared by the benchmarks: timing and the RESULTS.md writer."""

import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import jax

from flows._runtime import configure_prefect

configure_prefect()  # before Prefect is imported by the benchmarks' flows
RESULTS = Path(__file__).with_name("RESULTS.md")


def timed(fn, *args, repeats: int = 5):
    """Compiles `fn` once, then **returns** (result, compile+first seconds, [run seconds])."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    return out, first, runs


def median(xs):
    return statistics.median(xs)


def machine() -> str:
    dev = jax.devices()[0]
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} CPUs, {platform.machine()}, "
        f"JAX {jax.__version__} on {dev.platform} ({dev.device_kind}), Python {sys.version.split()[0]}"
    )


def write_section(name: str, body: str) -> None:
    """Replaces the section `<!-- name -->…<!-- /name -->` of RESULTS.md (or appends it)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    RESULTS.write_text(text)
