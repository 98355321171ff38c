"""Sweeps and ensembles on a Dask cluster through Prefect's Dask task runner, with the
stores on a real S3-compatible server (loopback): a sweep gives the same stores as its
members run one by one; an ensemble's member 0 is the cycle's own product forecast."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from _pipeline_helpers import ROOT, UNCOMPARED, experiment_config, store_arrays

import configs
import storage
import tasks
from flows import _distributed, _flows

CYCLES = 24


@pytest.fixture(scope="module")
def cluster():
    """A dask.distributed LocalCluster (2 worker processes), reached by its address as any
    running scheduler would be."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        preload=["flows._distributed"],
    ) as c:
        yield c.scheduler_address


def _sweep_file(tmp_path, bucket, options) -> "Path":
    base = yaml.safe_load((ROOT / "configs" / "l96-3dvar.yaml").read_text())
    base["store"] = {"url": "unused", "storage_options": options, "block": 32}
    base["observations"]["storage_options"] = options
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {
        "sweep": "s3-sweep",
        "base": "base.yaml",  # relative to the sweep file
        "folder": f"{bucket}/sweep",
        "cycles": CYCLES,
        "block": 8,
        "members": {
            "3dvar": {},
            "oi": {"method": {"name": "oi", "prior_cov": base["method"]["prior_cov"]}},
            "incr": {
                "method": {
                    "name": "incremental_4dvar",
                    "n_outer": 2,
                    "n_inner": 20,
                    "prior_cov": base["method"]["prior_cov"],
                }
            },
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


@pytest.mark.slow
def test_sweep_on_dask_equals_members_run_one_by_one(prefect_api, cluster, s3_bucket, tmp_path):
    bucket, options = s3_bucket
    sweep_file = _sweep_file(tmp_path, bucket, options)
    results = _distributed.run_sweep(str(sweep_file), address=cluster)
    assert [r["experiment"] for r in results] == ["s3-sweep-3dvar", "s3-sweep-oi", "s3-sweep-incr"]
    assert all(r["statuses"] == {"committed": CYCLES} for r in results)
    assert all(r["store"].startswith(f"{bucket}/sweep/") for r in results)
    # 3DVar and OI are the same analysis with one linear H (the BLUE): they score alike
    rmse = {r["experiment"]: r["rmse_analysis"] for r in results}
    assert abs(rmse["s3-sweep-3dvar"] - rmse["s3-sweep-oi"]) < 1e-4
    assert all(r["rmse_analysis"] < r["rmse_background"] for r in results)

    # the same member configs run one by one in this process, into other stores
    _, members = configs.load_sweep(sweep_file)
    for name, data in members.items():
        data["store"]["url"] = f"{bucket}/sweep/serial-{name}.zarr"
        path = tmp_path / f"serial-{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        end = storage.cycle_id(tasks.experiment(path).axis.point(CYCLES - 1))
        _flows.cycling_flow(str(path), end=end, block=8)
        swept = xr.open_zarr(f"{bucket}/sweep/{name}.zarr", storage_options=options)
        serial = xr.open_zarr(data["store"]["url"], storage_options=options)
        for var in swept.data_vars:
            if var in UNCOMPARED:
                continue
            a, b = swept[var].values[:CYCLES], serial[var].values[:CYCLES]
            if a.dtype.kind == "f":
                np.testing.assert_array_equal(a, b, err_msg=f"{name}: {var}")
            else:
                assert (a == b).all(), f"{name}: {var}"


@pytest.mark.slow
def test_ensemble_on_a_local_cluster(prefect_api, s3_bucket, tmp_path):
    bucket, options = s3_bucket
    sweep_file = _sweep_file(tmp_path, bucket, options)
    _flows.simulate_flow  # noqa: B018 (the OSSE comes from the sweep's first member)
    _, members = configs.load_sweep(sweep_file)
    data = members["3dvar"]
    data["store"]["url"] = f"{bucket}/ens/store.zarr"
    path = tmp_path / "ens.yaml"
    path.write_text(yaml.safe_dump(data))
    exp = tasks.experiment(path)
    _flows.simulate_flow(str(path), 6, 0)
    _flows.cycling_flow(str(path), end=storage.cycle_id(exp.axis.point(5)), block=4)
    cycle = storage.cycle_id(exp.axis.point(5))
    # the runner's own LocalCluster (no address)
    url = _distributed.run_ensemble(str(path), cycle, members=5, spread=0.5, seed=1)
    assert url == f"{bucket}/ens/ensemble-{cycle}.zarr"
    ens = xr.open_zarr(url, storage_options=options)
    assert ens.forecast.dims == ("member", "lead_time", "site")
    assert ens.sizes["member"] == 5
    product = xr.open_zarr(exp.store_url, storage_options=options).forecast.isel(cycle=5)
    # member 0 starts from the analysis itself: it is the cycle's product forecast
    np.testing.assert_allclose(ens.forecast.isel(member=0).values, product.values, atol=1e-12)
    spread = ens.spread.mean("site").values
    assert spread[0] > 0.3 and spread[-1] > spread[0]  # perturbations grow (chaos)
    np.testing.assert_allclose(ens["mean"].values, ens.forecast.values.mean(axis=0))


@pytest.mark.slow
def test_member_forecasts_on_dask_give_the_store_of_a_vmap_run(prefect_api, cluster, tmp_path):
    from distributed import Client, get_task_stream

    n = 3
    (tmp_path / "vmap").mkdir()
    (tmp_path / "dask").mkdir()
    here = experiment_config(tmp_path / "vmap", "l96-etkf")
    spread = experiment_config(
        tmp_path / "dask",
        "l96-etkf",
        compute__member_forecasts="dask",
        compute__dask={"address": cluster},
    )
    for path in (here, spread):
        _flows.simulate_flow(str(path), n, 0)
    end = storage.cycle_id(tasks.experiment(here).axis.point(n - 1))
    _flows.cycling_flow(str(here), end=end)
    with Client(cluster) as client, get_task_stream(client) as stream:
        out = _flows.cycling_flow(str(spread), end=end)
    assert out["statuses"] == {"committed": n}
    # each cycle's members went out in one chunk per worker thread, to both workers
    chunks = [t for t in stream.data if t["key"].startswith("forecast_chunk")]
    assert len(chunks) == 2 * n
    assert len({t["worker"] for t in chunks}) == 2
    a = store_arrays(tasks.experiment(here).store_url, n)
    b = store_arrays(tasks.experiment(spread).store_url, n)
    for name in a:
        if name != "obs_source":  # the path of each run's own OSSE
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the setting is where work runs, not what it computes: both stores have one identity
    assert tasks.experiment(here).identity == tasks.experiment(spread).identity


def test_a_member_forecast_failing_on_the_cluster_is_named(cluster):
    import vardax_core as vc

    pool = tasks.MemberPool(configs.DaskConfig(address=cluster))
    try:
        model = vc.Lorenz96(K=40, F=8.0, dt=0.05)
        members = np.random.default_rng(0).normal(size=(6, 40))
        out, workers = pool.forecast(model, members, 3)
        assert out.shape == (6, 4, 40) and len(workers) == 2
        with pytest.raises(tasks.MemberForecastError, match="member forecasts on the Dask"):
            pool.forecast(model, members[:, :7], 3)  # states the model does not take
    finally:
        pool.close()


def test_member_forecasts_on_dask_are_refused_where_they_cannot_apply(tmp_path):
    single = experiment_config(tmp_path, "l96-3dvar", compute__member_forecasts="dask")
    with pytest.raises(configs.ConfigError, match="compute.member_forecasts: dask.*3dvar"):
        tasks.experiment(single)
    ens = experiment_config(tmp_path, "l96-etkf", compute__member_forecasts="dask")
    with pytest.raises(configs.ConfigError, match="compute.member_forecasts: dask.*block 4"):
        _flows.cycling_flow.fn(str(ens), block=4)
