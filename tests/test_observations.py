"""Observation sources: the schema in four formats, window selection, QC, and clear errors."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import storage as st

TIMES = pd.date_range("2026-01-01T00:00", periods=5, freq="3h")
LOCATIONS = [0, 2, 4]


def _table(seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(5, 3))
    values[1, 2] = np.nan  # not observed
    return st.observation_table(TIMES, LOCATIONS, values, 0.5), values


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".zarr", ".nc"])
def test_every_format_round_trips_and_selects_a_window(tmp_path, suffix):
    table, values = _table()
    url = tmp_path / f"obs{suffix}"
    st.write_observation_table(url, table)
    back = st.read_observation_table(url)
    assert len(back) == 14 and str(back["time"].dtype) == "datetime64[ns]"
    w = st.read_window(url, "2026-01-01T00:00Z", [0, 10800, 21600], LOCATIONS)
    assert w.values.shape == (3, 3) and w.n_obs == 8
    np.testing.assert_allclose(w.values[w.mask], values[:3][np.isfinite(values[:3])])
    assert not w.mask[1, 2] and np.all(w.error_std[w.mask] == 0.5)
    assert w.source == str(url)
    # the same observations give the same lineage hash whatever the format
    csv = tmp_path / "same.csv"
    st.write_observation_table(csv, table)
    assert (
        st.read_window(csv, "2026-01-01T00:00Z", [0, 10800, 21600], LOCATIONS).content_hash
        == w.content_hash
    )


def test_gridded_netcdf_layout(tmp_path):
    _, values = _table()
    ds = xr.Dataset(
        {
            "value": (("time", "location"), values),
            "error_std": (("time", "location"), np.full((5, 3), 0.5)),
        },
        coords={"time": TIMES, "location": LOCATIONS},
    )
    ds.to_netcdf(tmp_path / "grid.nc", engine="h5netcdf")
    w = st.read_window(tmp_path / "grid.nc", "2026-01-01T06:00Z", [0, 10800], LOCATIONS)
    np.testing.assert_allclose(w.values[w.mask], values[2:4].ravel())


def test_fsspec_url(tmp_path):
    table, _ = _table()
    st.write_observation_table("memory://vardax-obs/obs.parquet", table)
    w = st.read_window(
        "memory://vardax-obs/obs.parquet", "2026-01-01T03:00Z", [0, 10800], LOCATIONS
    )
    assert w.n_obs == 5


def test_empty_window_is_an_explicit_result(tmp_path):
    table, _ = _table()
    st.write_observation_table(tmp_path / "obs.csv", table)
    w = st.read_window(tmp_path / "obs.csv", "2026-02-01T00:00Z", [0, 10800], LOCATIONS)
    assert w.empty and w.n_obs == 0 and not w.mask.any()


def test_clear_errors(tmp_path):
    with pytest.raises(st.ObservationError, match=r"observation file not found: .*missing\.csv"):
        st.read_observation_table(tmp_path / "missing.csv")
    pd.DataFrame(
        {"when": ["2026-01-01T00:00Z"], "location": [0], "value": [1.0], "error_std": [1.0]}
    ).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(
        st.ObservationError,
        match=r"a\.csv lacks column\(s\) \['time'\]; it has \['when', 'location', 'value', 'error_std'\]",
    ):
        st.read_observation_table(tmp_path / "a.csv")
    pd.DataFrame(
        {"time": [3600, 7200], "location": [0, 0], "value": [1.0, 2.0], "error_std": [1.0, 1.0]}
    ).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(st.ObservationError, match="column 'time' holds int64 numbers, not times"):
        st.read_observation_table(tmp_path / "b.csv")
    xr.Dataset(
        {"time": ("row", [0, 1]), "location": ("row", [0, 1]), "val": ("row", [1.0, 2.0])}
    ).to_netcdf(tmp_path / "c.nc", engine="h5netcdf")
    with pytest.raises(st.ObservationError, match=r"c\.nc lacks the variable 'value'"):
        st.read_observation_table(tmp_path / "c.nc")
    with pytest.raises(st.ObservationError, match="cannot tell the format"):
        st.read_observation_table(tmp_path / "obs.txt")
    table, _ = _table()
    with pytest.raises(
        st.ObservationError, match=r"locations \[2, 4\] that the observation layout \[0, 1\] lacks"
    ):
        st.select_window(table, "2026-01-01T00:00Z", [0, 10800], [0, 1])
    with pytest.raises(st.ObservationError, match="falls between the window times"):
        st.select_window(table, "2026-01-01T00:00Z", [0, 21600], LOCATIONS)
    with pytest.raises(st.ObservationError, match="duplicated observations"):
        st.select_window(pd.concat([table, table]), "2026-01-01T00:00Z", [0], LOCATIONS)


def test_quality_control_flags():
    values = np.array([[1.0, np.nan, 50.0, 9.0]])
    obs = st.WindowObservations(
        values, np.full((1, 4), 1.0), np.array([[True, True, True, True]]), "t", "h"
    )
    static = st.quality_control(obs, valid_range=(-30, 30))
    assert [st.QC[f] for f in static[0]] == ["pass", "nonfinite", "out_of_range", "pass"]
    # the check against the background is the cycle's: |9 − 0| > 5·sqrt(1² + 1²)
    import jax.numpy as jnp

    import tasks
    import vardax_core as vc

    passed = static == st.QC.index("pass")
    check = vc.BackgroundCheck(vc.SubsetObs(range(4), 4), 1.0, 1.0, 5.0)
    screened = check(jnp.zeros((1, 4)), vc.ObsWindow(values, passed))
    window = tasks.Observations(values, np.ones((1, 4)), passed, static, "t", "h")
    flags = window.flags(np.asarray(screened.mask))
    assert [st.QC[f] for f in flags[0]] == ["pass", "nonfinite", "out_of_range", "gross_error"]
    missing = st.WindowObservations(
        values, np.ones((1, 4)), np.array([[False, True, True, True]]), "t", "h"
    )
    assert st.QC[st.quality_control(missing)[0, 0]] == "missing"


def test_nature_run_round_trip(tmp_path):
    states = np.arange(12.0).reshape(4, 3)
    st.write_nature_run(tmp_path / "truth.zarr", TIMES[:4], states)
    truth = st.read_nature_run(tmp_path / "truth.zarr")
    np.testing.assert_array_equal(truth.values, states)
    assert truth.time.values[1] == np.datetime64("2026-01-01T03:00")
    with pytest.raises(st.ObservationError, match="nature run not found"):
        st.read_nature_run(tmp_path / "nope.zarr")


def test_a_variable_column_is_refused_not_assimilated_as_one_variable(tmp_path):
    path = tmp_path / "multi.csv"
    pd.DataFrame(
        {
            "time": ["2026-01-01T06:00:00Z"] * 2,
            "location": [0, 0],
            "value": [1.0, 280.0],
            "error_std": [1.0, 0.5],
            "variable": ["u", "temperature"],
        }
    ).to_csv(path, index=False)
    with pytest.raises(st.ObservationError, match=r"multi\.csv has a 'variable' column"):
        st.read_observation_table(path)
