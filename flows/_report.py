"""The experiment report: PNG plots and a markdown summary from a cycle store (and the OSSE
nature run, when there is one). Reads through `storage`; draws with matplotlib."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

import storage  # noqa: E402


def _truth_at(truth: xr.DataArray | None, ds: xr.Dataset, window_index: int) -> np.ndarray | None:
    """The truth at `cycle + window_time[window_index]` for every cycle, NaN where unknown."""
    if truth is None:
        return None
    times = ds.cycle.values + ds.window_time.values[window_index]
    return truth.reindex(time=times).values


def window_end_rmse(ds: xr.Dataset, truth: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Per cycle of `ds`, the RMSE against `truth` of the analysis and of the background at
    the window end (NaN where the truth is unknown)."""
    truth_end = _truth_at(truth, ds, -1)
    state_axes = tuple(range(1, truth_end.ndim))  # every state dimension (site, or y and x)
    return tuple(
        np.sqrt(
            np.nanmean((ds[name].isel(window_time=-1).values - truth_end) ** 2, axis=state_axes)
        )
        for name in ("analysis", "background")
    )


def store_scores(
    store_url, truth_url, start: int = 0, stop: int | None = None, storage_options=None
) -> dict:
    """Time-mean window-end RMSE (`"analysis"`, `"background"`) of cycles `start:stop` of a
    store against an OSSE nature run: what `vardax_core.cycle_scores` gives in memory."""
    ds = xr.open_zarr(str(store_url), storage_options=storage_options or None)
    ds = ds.isel(cycle=slice(start, stop))
    truth = storage.read_nature_run(truth_url, storage_options=storage_options)
    rmse_a, rmse_b = window_end_rmse(ds, truth)
    return {"analysis": float(np.mean(rmse_a)), "background": float(np.mean(rmse_b))}


def write_report(store_url, out_dir, *, truth_url=None, storage_options=None) -> Path:
    """Writes `rmse.png`, `hovmoller.png`, `innovations.png` and `summary.md` into `out_dir`.

    **Returns** the path of `summary.md`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = storage.CycleStore.open(store_url, storage_options=storage_options)
    table = store.status_table()
    done = table["status"].isin(["committed", "degraded"]).to_numpy()
    ds = store.dataset().isel(cycle=np.flatnonzero(done))
    truth = storage.read_nature_run(truth_url) if truth_url else None
    experiment = store.attrs.get("experiment") or Path(str(store_url)).stem
    used = np.flatnonzero((table["status"] != "empty").to_numpy())
    table = table.iloc[: used[-1] + 1 if len(used) else 0]  # not the unused slots at the end
    counts = table["status"].value_counts().reindex(list(storage.STATUS), fill_value=0)

    lines = [
        f"# {experiment}",
        "",
        f"Store `{store_url}` — cycles from {store.attrs['cycle_origin']} every "
        f"{store.attrs['cycle_interval']}.",
        "",
        "| status | cycles |",
        "|---|---|",
        *[f"| {name} | {int(n)} |" for name, n in counts.items()],
        "",
    ]
    flagged = table[table["status"].isin(["degraded", "failed", "skipped"])]
    if len(flagged):
        lines += ["| cycle | status | reason |", "|---|---|---|"]
        lines += [
            f"| {row.cycle_id} | {row.status} | {row.status_reason or '—'} |"
            for row in flagged.head(50).itertuples()
        ]
        lines.append("")
    if ds.sizes["cycle"] == 0:
        lines.append("No committed cycles yet.")
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        return out / "summary.md"

    cycles = pd.DatetimeIndex(ds.cycle.values)
    analysis = ds.analysis.isel(window_time=-1).values
    background = ds.background.isel(window_time=-1).values
    truth_end = _truth_at(truth, ds, -1)
    state_dim = ds.analysis.dims[-1]

    fig, ax = plt.subplots(figsize=(10, 3.6))
    if truth_end is not None:
        rmse_a, rmse_b = window_end_rmse(ds, truth)
        ax.plot(
            cycles, rmse_b, color="C1", lw=1, label=f"background (mean {np.nanmean(rmse_b):.3f})"
        )
        ax.plot(
            cycles, rmse_a, color="C0", lw=1.2, label=f"analysis (mean {np.nanmean(rmse_a):.3f})"
        )
        ax.set_ylabel("RMSE against truth")
        lines += [
            f"Time-mean RMSE at the window end over {len(cycles)} cycles: analysis "
            f"**{np.nanmean(rmse_a):.4f}**, background {np.nanmean(rmse_b):.4f}.",
            "",
        ]
    else:
        state_axes = tuple(range(1, analysis.ndim))
        spread = np.sqrt(np.mean((analysis - background) ** 2, axis=state_axes))
        ax.plot(cycles, spread, color="C0", lw=1, label="RMS increment")
        ax.set_ylabel("RMS increment (no truth)")
    degraded = table.index[table["status"] == "degraded"]
    for t in degraded:
        ax.axvline(t, color="C3", alpha=0.4, lw=1)
    ax.set_title(
        f"{experiment}: error at the window end"
        + (" (red: degraded cycles)" if len(degraded) else "")
    )
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rmse.png", dpi=110)
    plt.close(fig)

    if analysis.ndim == 3:  # (cycle, y, x): a 2-D field
        _draw_maps(ds, truth_end, experiment, out / "maps.png")
        state_figure = ("maps", "maps.png")
    else:
        _draw_hovmoller(cycles, analysis, truth_end, state_dim, experiment, out / "hovmoller.png")
        state_figure = ("Hovmöller", "hovmoller.png")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 4.4), sharex=True)
    chi2 = ds.innovation_chi2_dof.values
    ax1.plot(cycles, chi2, ".", ms=3, color="C2")
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_ylabel("innovation χ²/dof")
    ax2.plot(cycles, ds.innovation_mean.values, ".", ms=3, color="C4")
    ax2.axhline(0.0, color="k", lw=0.8)
    ax2.set_ylabel("innovation mean")
    ax1.set_title(f"{experiment}: innovation statistics (consistent B and R give χ²/dof ≈ 1)")
    fig.tight_layout()
    fig.savefig(out / "innovations.png", dpi=110)
    plt.close(fig)

    finite_chi2 = chi2[np.isfinite(chi2)]
    if len(finite_chi2):
        lines += [
            f"Innovation χ²/dof: median {np.median(finite_chi2):.3f} (1 when B and R fit).",
            "",
        ]
    lines += [
        "![RMSE](rmse.png)",
        "",
        f"![{state_figure[0]}]({state_figure[1]})",
        "",
        "![innovations](innovations.png)",
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return out / "summary.md"


def _draw_hovmoller(cycles, analysis, truth_end, state_dim, experiment, path) -> None:
    """Time × site panels at the window end: truth, analysis and their difference."""
    panels = [("analysis", analysis)]
    if truth_end is not None:
        panels = [
            ("truth", truth_end),
            ("analysis", analysis),
            ("analysis − truth", analysis - truth_end),
        ]
    fig, axs = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels) + 0.6), sharex=True)
    axs = np.atleast_1d(axs)
    vmax = float(np.nanmax(np.abs(panels[0][1])))
    for ax, (name, field) in zip(axs, panels, strict=True):
        lim = vmax if "−" not in name else float(np.nanmax(np.abs(field))) or 1.0
        im = ax.pcolormesh(
            cycles,
            np.arange(field.shape[1]),
            field.T,
            cmap="RdBu_r",
            vmin=-lim,
            vmax=lim,
            shading="nearest",
        )
        ax.set_ylabel(f"{name}\n{state_dim}")
        fig.colorbar(im, ax=ax, pad=0.01)
    axs[0].set_title(f"{experiment}: Hovmöller at the window end")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_maps(ds: xr.Dataset, truth_end, experiment: str, path) -> None:
    """Maps of the last cycle at the window end: truth, background, analysis and the
    analysis error, with the observations the window assimilated."""
    last = ds.isel(cycle=-1, window_time=-1)
    background, analysis = last.background.values, last.analysis.values
    panels = [("background", background), ("analysis", analysis)]
    if truth_end is not None:
        truth = truth_end[-1]
        panels = [
            ("truth", truth),
            ("background", background),
            ("analysis", analysis),
            ("analysis − truth", analysis - truth),
        ]
    fig, axs = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 3.6))
    lim = float(np.nanmax(np.abs(panels[0][1]))) or 1.0
    seen = ds.obs_mask.isel(cycle=-1).values.any(axis=0)
    for ax, (name, field) in zip(np.atleast_1d(axs), panels, strict=True):
        error = "−" in name
        err_lim = float(np.nanmax(np.abs(field))) or 1.0
        im = ax.imshow(
            field,
            origin="lower",
            cmap="PuOr_r" if error else "RdBu_r",
            vmin=-(err_lim if error else lim),
            vmax=err_lim if error else lim,
        )
        if "obs_x" in ds.coords and error:
            ax.plot(ds.obs_x.values[seen], ds.obs_y.values[seen], "k.", ms=1.5, alpha=0.6)
        ax.set_title(name + (" (dots: observations)" if error and "obs_x" in ds.coords else ""))
        ax.set_xlabel("x")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    np.atleast_1d(axs)[0].set_ylabel("y")
    when = pd.Timestamp(ds.cycle.values[-1]) + pd.Timedelta(ds.window_time.values[-1])
    fig.suptitle(f"{experiment}: window end {when:%Y-%m-%d %H:%M}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_figure_png(store_url, first: int, last: int, storage_options=None) -> bytes:
    """A small PNG of cycles `first…last` of a store: innovation χ²/dof and the largest
    increment per cycle, statuses coloured (for the Prefect UI's run artifact)."""
    import io

    store = storage.CycleStore.open(store_url, storage_options=storage_options)
    table = store.status_table().iloc[first : last + 1]
    colours = {"committed": "C2", "degraded": "C1", "failed": "C3", "skipped": "C7"}
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 3.6), sharex=True)
    for status, rows in table.groupby("status", observed=True):
        c = colours.get(str(status), "k")
        ax1.plot(rows.index, rows["innovation_chi2_dof"], "o", ms=3, color=c, label=str(status))
        ax2.plot(rows.index, rows["increment_max_sigma"], "o", ms=3, color=c)
    ax1.axhline(1.0, color="k", lw=0.6)
    ax1.set_ylabel("χ²/dof")
    ax2.set_ylabel("max |δx|/σ_b")
    ax1.legend(loc="upper right", fontsize=7)
    ax1.set_title(f"{store.attrs.get('experiment', '')}: cycles of this run", fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
