"""The `vardax-cycle` command line (typer + rich).

`validate`, `status`, `report` and `info` are here; the cycling commands (`simulate`, `run`,
`backfill`) land with the Prefect flows.
"""

import importlib.metadata as md
from pathlib import Path
from typing import Annotated

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


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="experiment YAML file")]) -> None:
    """Checks an experiment config; prints what it sets up, or each problem with its key."""
    import configs

    try:
        cfg = configs.load_config(config)
    except configs.ConfigError as err:
        console.print(f"[red]invalid config[/red]\n{err}")
        raise typer.Exit(code=2) from None
    console.print(
        f"[green]valid[/green]: {cfg.experiment} — {cfg.model.name} (state {cfg.model.state_size}), "
        f"{cfg.method.name}, cycles from {cfg.cycling.origin} every {cfg.cycling.interval}, "
        f"store {cfg.store.url}"
    )


@app.command()
def status(
    store: Annotated[str, typer.Argument(help="store path or fsspec URL")],
    last: Annotated[int, typer.Option(help="show the last N cycle slots that are not empty")] = 20,
) -> None:
    """The store's cycles and their states (a reader: needs no lock)."""
    import storage

    try:
        s = storage.CycleStore.open(store)
    except storage.StoreError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(code=2) from None
    table = s.status_table()
    used = (table["status"] != "empty").to_numpy().nonzero()[0]
    table = table.iloc[: used[-1] + 1 if len(used) else 0]  # not the unused slots of the last block
    counts = table["status"].value_counts()
    shown = table[table["status"] != "empty"].tail(last)
    out = Table(
        title=f"{s.attrs.get('experiment') or store}: "
        + ", ".join(
            f"{name} {int(counts.get(name, 0))}" for name in storage.STATUS if counts.get(name, 0)
        )
    )
    for col in ("cycle", "status", "cost_after", "iterations", "innovation_chi2_dof"):
        out.add_column(col)
    colour = {"committed": "green", "degraded": "yellow", "failed": "red", "skipped": "blue"}
    for _, row in shown.iterrows():
        st_name = str(row["status"])
        out.add_row(
            row["cycle_id"],
            f"[{colour.get(st_name, 'white')}]{st_name}[/]",
            f"{row['cost_after']:.4g}",
            str(row["iterations"]),
            f"{row['innovation_chi2_dof']:.3g}",
        )
    console.print(out)
    nxt = s.first_not_committed(s.axis.point(0), s.axis.point(max(s.n_slots - 1, 0)))
    console.print(
        f"first cycle still to run: {storage.iso(nxt) if nxt is not None else 'none in the store'}"
    )


@app.command()
def report(
    store: Annotated[str, typer.Argument(help="store path or fsspec URL")],
    out: Annotated[Path, typer.Option(help="folder for the PNGs and summary.md")] = Path(
        "runs/report"
    ),
    truth: Annotated[
        str | None, typer.Option(help="the OSSE nature run (Zarr), to score against")
    ] = None,
) -> None:
    """PNG plots (RMSE(t), Hovmöller, innovation statistics) and a markdown summary."""
    import storage
    from flows._report import write_report

    try:
        summary = write_report(store, out, truth_url=truth)
    except (storage.StoreError, storage.ObservationError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(code=2) from None
    console.print(f"report: {summary} (and the PNGs beside it)")
