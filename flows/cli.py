"""The `vardax-cycle` command line (typer + rich).

The cycling commands (`simulate`, `run`, `backfill`, `status`, `report`, `validate`) land
with the flows; `info` tells what this installation runs on.
"""

import importlib.metadata as md

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="vardax-cycle: cycling data assimilation on JAX, Prefect and Zarr.", no_args_is_help=True
)
console = Console()

_PACKAGES = (
    "vardax-cycle",
    "jax",
    "jaxlib",
    "equinox",
    "diffrax",
    "optimistix",
    "lineax",
    "optax",
    "prefect",
    "xarray",
    "zarr",
    "dask",
    "fsspec",
    "pydantic",
    "typer",
)


@app.callback()
def main() -> None:
    """Cycling data assimilation: a pure-JAX core run by Prefect into Zarr stores."""


@app.command()
def info() -> None:
    """Versions of the stack and the devices JAX sees."""
    import jax

    table = Table(title="vardax-cycle installation")
    table.add_column("package")
    table.add_column("version")
    for name in _PACKAGES:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = "[red]not installed[/red]"
        table.add_row(name, version)
    console.print(table)
    devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    console.print(f"JAX devices: {devices}")
