"""The report: plots and a summary from a real store and nature run on disk."""

import numpy as np
import pandas as pd

import storage as st
from flows._report import write_report


def test_report_from_a_store(tmp_path):
    n, K = 30, 12
    layout = st.StoreLayout(
        state_dims=(("site", K),), window_offsets_s=(0, 21600), lead_offsets_s=(), obs_size=K
    )
    times = pd.date_range("2026-01-01", periods=n + 2, freq="6h")
    rng = np.random.default_rng(0)
    truth = np.sin(np.arange(n + 2)[:, None] / 5 + np.arange(K)[None] / 2) * 3
    st.write_nature_run(tmp_path / "truth.zarr", times, truth)
    with st.CycleStore.create(
        tmp_path / "s.zarr", layout, "2026-01-01T00:00Z", "PT6H", experiment="demo"
    ) as s:
        for c in range(n):
            window_truth = truth[c : c + 2]
            s.write_cycle(
                times[c],
                {
                    "background": window_truth + rng.normal(0, 0.5, (2, K)),
                    "analysis": window_truth + rng.normal(0, 0.2, (2, K)),
                    "innovation_chi2_dof": 1.0 + rng.normal(0, 0.1),
                    "innovation_mean": rng.normal(0, 0.05),
                },
                "degraded" if c == 17 else "committed",
            )
    summary = write_report(
        tmp_path / "s.zarr", tmp_path / "report", truth_url=tmp_path / "truth.zarr"
    )
    text = summary.read_text()
    assert "| committed | 29 |" in text and "| degraded | 1 |" in text
    rmse_a = float(text.split("analysis **")[1].split("**")[0])
    assert 0.15 < rmse_a < 0.25  # the analysis noise was 0.2
    for name in ("rmse.png", "hovmoller.png", "innovations.png"):
        png = tmp_path / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_report_of_an_empty_store(tmp_path):
    layout = st.StoreLayout(
        state_dims=(("site", 4),), window_offsets_s=(0,), lead_offsets_s=(), obs_size=4
    )
    st.CycleStore.create(tmp_path / "s.zarr", layout, "2026-01-01T00:00Z", "PT6H").close()
    summary = write_report(tmp_path / "s.zarr", tmp_path / "r")
    assert "No committed cycles yet." in summary.read_text()
