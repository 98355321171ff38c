"""The experiment report: PNG plots and a markdown summary of a cycle store (and of the OSSE
nature run, when there is one). The data and the scores come from `tasks.report_data`; this
module only draws and writes."""

from pathlib import Path

import numpy as np
import pandas as pd

import storage
import tasks


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a figure is drawn (not with
    the flows: it costs a second at start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _status_lines(data: tasks.ReportData, store_url) -> tuple[list[str], pd.DataFrame]:
    table = data.table
    used = np.flatnonzero((table["status"] != "empty").to_numpy())
    table = table.iloc[: used[-1] + 1 if len(used) else 0]  # not the unused slots at the end
    counts = table["status"].value_counts().reindex(list(storage.STATUS), fill_value=0)
    lines = [
        f"# {data.attrs.get('experiment') or Path(str(store_url)).stem}",
        "",
        f"Store `{store_url}` — cycles from {data.attrs['cycle_origin']} every "
        f"{data.attrs['cycle_interval']}.",
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
    return lines, table


def _draw_rmse(data: tasks.ReportData, table, experiment: str, path) -> list[str]:
    """RMSE against the truth at the window end (or the RMS increment without a truth)."""
    plt = _pyplot()
    ends, s = data.ends, data.scores
    cycles = pd.DatetimeIndex(ends.cycles)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    lines = []
    if ends.truth is not None:
        mean_a, mean_b = float(s["mean_rmse_analysis"]), float(s["mean_rmse_background"])
        ax.plot(
            cycles, s["rmse_background"], color="C1", lw=1, label=f"background (mean {mean_b:.3f})"
        )
        ax.plot(
            cycles, s["rmse_analysis"], color="C0", lw=1.2, label=f"analysis (mean {mean_a:.3f})"
        )
        ax.set_ylabel("RMSE against truth")
        lines = [
            f"Time-mean RMSE at the window end over {len(cycles)} cycles: analysis "
            f"**{mean_a:.4f}**, background {mean_b:.4f}.",
            "",
        ]
    else:
        ax.plot(cycles, s["rms_increment"], color="C0", lw=1, label="RMS increment")
        ax.set_ylabel("RMS increment (no truth)")
    if "ensemble_spread" in table and len(cycles):  # spread against error
        spread = table["ensemble_spread"].reindex(cycles).to_numpy()
        ax.plot(cycles, spread, color="C1", lw=1, ls="--", label="background ensemble spread")
        lines += [f"Mean background ensemble spread {np.nanmean(spread):.4f}.", ""]
    degraded = table.index[table["status"] == "degraded"]
    for t in degraded:
        ax.axvline(t, color="C3", alpha=0.4, lw=1)
    note = " (red: degraded cycles)" if len(degraded) else ""
    ax.set_title(f"{experiment}: error at the window end{note}")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return lines


def _draw_innovations(table, done, experiment: str, path) -> None:
    plt = _pyplot()
    cycles, rows = table.index[done], table.iloc[done]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 4.4), sharex=True)
    ax1.plot(cycles, rows["innovation_chi2_dof"], ".", ms=3, color="C2")
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_ylabel("innovation χ²/dof")
    ax2.plot(cycles, rows["innovation_mean"], ".", ms=3, color="C4")
    ax2.axhline(0.0, color="k", lw=0.8)
    ax2.set_ylabel("innovation mean")
    ax1.set_title(f"{experiment}: innovation statistics (consistent B and R give χ²/dof ≈ 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(store_url, out_dir, *, truth_url=None, storage_options=None) -> Path:
    """Writes `rmse.png`, a state figure (`hovmoller.png`, or `maps.png` for a field),
    `innovations.png` and `summary.md` into `out_dir`. **Returns** the path of `summary.md`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = tasks.report_data(store_url, truth_url, storage_options)
    experiment = data.attrs.get("experiment") or Path(str(store_url)).stem
    lines, table = _status_lines(data, store_url)
    done = np.flatnonzero(table["status"].isin(["committed", "degraded"]).to_numpy())
    if len(done) == 0:
        (out / "summary.md").write_text("\n".join([*lines, "No committed cycles yet."]) + "\n")
        return out / "summary.md"
    lines += _draw_rmse(data, table, experiment, out / "rmse.png")
    if data.ends.analysis.ndim == 3:  # (cycle, y, x): a 2-D field
        _draw_maps(data.ends, experiment, out / "maps.png")
        state_figure = ("maps", "maps.png")
    else:
        _draw_hovmoller(data.ends, experiment, out / "hovmoller.png")
        state_figure = ("Hovmöller", "hovmoller.png")
    _draw_innovations(table, done, experiment, out / "innovations.png")
    median = data.scores.get("chi2_dof_median")
    if median is not None and np.isfinite(median):
        lines += [f"Innovation χ²/dof: median {float(median):.3f} (1 when B and R fit).", ""]
    lines += ["![RMSE](rmse.png)", "", f"![{state_figure[0]}]({state_figure[1]})", ""]
    lines += ["![innovations](innovations.png)", ""]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return out / "summary.md"


def _draw_hovmoller(ends: storage.WindowEnds, experiment: str, path) -> None:
    """Time × site panels at the window end: truth, analysis and their difference."""
    plt = _pyplot()
    cycles, analysis, truth_end = pd.DatetimeIndex(ends.cycles), ends.analysis, ends.truth
    state_dim = ends.state_dims[-1]
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


def _draw_maps(ends: storage.WindowEnds, experiment: str, path) -> None:
    """Maps of the last cycle at the window end: truth, background, analysis and the
    analysis error, with the observations the window assimilated."""
    plt = _pyplot()
    background, analysis = ends.background[-1], ends.analysis[-1]
    panels = [("background", background), ("analysis", analysis)]
    if ends.truth is not None:
        truth = ends.truth[-1]
        panels = [
            ("truth", truth),
            ("background", background),
            ("analysis", analysis),
            ("analysis − truth", analysis - truth),
        ]
    fig, axs = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 3.6))
    lim = float(np.nanmax(np.abs(panels[0][1]))) or 1.0
    points, seen = ends.obs_points, ends.obs_seen_last
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
        if points is not None and error:
            ax.plot(points[seen, 1], points[seen, 0], "k.", ms=1.5, alpha=0.6)
        ax.set_title(name + (" (dots: observations)" if error and points is not None else ""))
        ax.set_xlabel("x")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    np.atleast_1d(axs)[0].set_ylabel("y")
    when = pd.Timestamp(ends.valid[-1])
    fig.suptitle(f"{experiment}: window end {when:%Y-%m-%d %H:%M}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_figure_png(store_url, first: int, last: int, storage_options=None) -> bytes | None:
    """A small PNG of cycles `first…last` of a store: innovation χ²/dof and the largest
    increment per cycle, statuses coloured (for the Prefect UI's run artifact); None when
    it cannot be drawn (a figure is not worth failing a run for)."""
    try:
        return _run_figure(store_url, first, last, storage_options)
    except Exception:
        return None


def _run_figure(store_url, first: int, last: int, storage_options) -> bytes:
    plt = _pyplot()
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
