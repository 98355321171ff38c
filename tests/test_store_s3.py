"""The cycle store on a real S3-compatible server (moto's server mode on loopback)."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _store_helpers import INTERVAL, LAYOUT, ORIGIN, cycle_data

import storage as st


def point(k):
    return pd.Timestamp("2026-01-01T00:00") + k * pd.Timedelta("6h")


def test_store_on_s3(s3_bucket):
    bucket, options = s3_bucket
    url = f"{bucket}/l96/exp.zarr"
    with st.CycleStore.create(url, LAYOUT, ORIGIN, INTERVAL, storage_options=options, block=4) as s:
        for k in (3, 0, 6):  # out of order, with growth
            s.write_cycle(point(k), cycle_data(k))
        with pytest.raises(st.StoreLockedError, match="locked by another writer"):
            st.CycleStore.open(url, mode="a", storage_options=options)
    reader = st.CycleStore.open(url, storage_options=options, layout=LAYOUT)
    assert reader.committed_cycles() == [point(0), point(3), point(6)]
    assert reader.first_not_committed(point(0), point(7)) == point(1)
    np.testing.assert_array_equal(
        reader.read_cycle(point(6))["analysis"], cycle_data(6)["analysis"]
    )
    ds = xr.open_zarr(url, storage_options=options)  # plain xarray, no project code
    assert ds.sizes["cycle"] == 8
    assert ds.cycle.values[3] == np.datetime64("2026-01-01T18:00")
    np.testing.assert_array_equal(
        ds.background.sel(cycle="2026-01-01T18:00").values, cycle_data(3)["background"]
    )
