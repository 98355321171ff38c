"""Observations with their own errors and positions.

- Mixed errors: on a linear-Gaussian window with half the observations at σ 0.1 and half at
  5.0, OI, 3DVar and 4DVar give the BLUE with that diagonal R.
- QG observed at positions read from a file: on grid points it equals the gridded network
  path; off the grid, with a different number of observations at each time, it runs cycle
  by cycle and in blocks (equal), stores each observation's position, and beats the
  background; more observations than the capacity is exit 2 naming the cycle and count.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
import pytest
from _pipeline_helpers import experiment_config, store_arrays
from typer.testing import CliRunner

import storage
import tasks
import vardax_core as vc
from flows import _flows
from flows.cli import app

# --- mixed errors: the BLUE with a diagonal R ---------------------------------------------

N, T = 6, 2


def _linear_window():
    key = jax.random.split(jax.random.PRNGKey(7), 3)
    A = 0.3 * jax.random.normal(key[0], (N, N)) - 0.5 * jnp.eye(N)
    model = vc.VectorFieldModel(lambda x: A @ x, N, 0.1)
    H = vc.LinearObs(jax.random.normal(key[1], (N, N)))
    B = vc.periodic_covariance(N, 1.5, 2.0)
    sigma = jnp.tile(jnp.array([0.1, 5.0]), (T + 1, N // 2))  # half 0.1, half 5.0
    xb = model.rollout(jax.random.normal(key[2], (N,)), T)
    y = jax.random.normal(jax.random.PRNGKey(8), (T + 1, N)) * 3.0
    obs = vc.ObsWindow(y, jnp.ones((T + 1, N), bool), error_std=sigma)
    return model, H, B, sigma, xb, obs


def _blue(B, G, R, xb, y):
    S = G @ B @ G.T + R
    return xb + B @ G.T @ jnp.linalg.solve(S, y - G @ xb)


def test_oi_and_3dvar_give_the_blue_with_each_observations_error():
    model, H, B, sigma, xb, obs = _linear_window()
    Bm, Hm = B.as_matrix(), H.operator.as_matrix()
    want = jnp.stack(
        [_blue(Bm, Hm, jnp.diag(sigma[t] ** 2), xb[t], obs.values[t]) for t in range(T + 1)]
    )
    one_sigma = vc.ScaledIdentityCovariance(N, 1.0)  # the method's R, which the window overrides
    oi = vc.OptimalInterpolation(H, B, one_sigma)
    three = vc.ThreeDVar(H, B, one_sigma, minimiser=optx.BFGS(rtol=1e-13, atol=1e-13))
    # OI is the BLUE's algebra (to rounding); BFGS on the cost stops at its float64 floor,
    # about 1e-8 here (the Hessian's conditioning: σ from 0.1 to 5.0; it varies by CPU)
    for method, atol in ((oi, 1e-12), (three, 1e-7)):
        got = method(xb, obs).trajectory
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=type(method).__name__)
    # the errors matter: one σ for all gives another analysis
    single = oi(xb, vc.ObsWindow(obs.values, obs.mask)).trajectory
    assert float(jnp.max(jnp.abs(single - want))) > 0.1


def test_4dvar_gives_the_blue_of_the_window_with_each_observations_error():
    model, H, B, sigma, xb, obs = _linear_window()
    M = jax.jacfwd(lambda x: model.rollout(x, T))(xb[0])  # (T+1, n, n): linear, exact
    G = jnp.concatenate([H.operator.as_matrix() @ M[t] for t in range(T + 1)])
    R = jnp.diag(jnp.ravel(sigma) ** 2)
    x0 = _blue(B.as_matrix(), G, R, xb[0], jnp.ravel(obs.values))
    want = model.rollout(x0, T)
    one_sigma = vc.ScaledIdentityCovariance(N, 1.0)
    methods = [
        vc.StrongFourDVar(
            model, H, B, one_sigma, minimiser=optx.LevenbergMarquardt(rtol=1e-13, atol=1e-13)
        ),
        vc.StrongFourDVar(model, H, B, one_sigma, minimiser=optx.BFGS(rtol=1e-13, atol=1e-13)),
        vc.IncrementalFourDVar(model, H, B, one_sigma, n_inner=60, tolerance=1e-13),
    ]
    for method in methods:
        got = method(xb, obs).trajectory
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8, err_msg=type(method).__name__)


def test_the_background_check_uses_each_observations_error():
    H = vc.SubsetObs(range(4), 4)
    check = vc.BackgroundCheck(H, obs_std=1.0, background_std=0.1, k=3.0)
    y = jnp.full((1, 4), 2.0)  # 2 away from a zero background
    obs = vc.ObsWindow(y, jnp.ones((1, 4), bool), error_std=jnp.array([[0.1, 0.1, 5.0, 5.0]]))
    kept = check(jnp.zeros((1, 4)), obs).mask
    assert kept.tolist() == [[False, False, True, True]]  # 2 > 3·0.14, 2 < 3·5.0


# --- QG at positions from a file ------------------------------------------------------------

CYCLES = 4
SMALL = dict(
    model={"name": "qg", "ny": 32, "nx": 32, "dt": 0.05},
    observations__network={"kind": "gridded", "every": 4},
    observations__every_steps=10,
    method__prior_cov={"kind": "spectral", "variance": 0.001, "length_scale": 3.0},
    cycling__window_steps=20,
    cycling__lead_steps=[0, 20],
    cycling__spinup_steps=1500,
)


@pytest.fixture(scope="module")
def osse(prefect_api, tmp_path_factory):
    """A small QG OSSE observed on every fourth grid point; **returns** its experiment."""
    root = tmp_path_factory.mktemp("qg-positions")
    config = experiment_config(
        root, "qg-3dvar", "osse.yaml", store__url=str(root / "osse.zarr"), **SMALL
    )
    _flows.simulate_flow(str(config), CYCLES, 0)
    return root, tasks.experiment(config)


def _positioned_config(root, name: str, obs_url, capacity: int):
    changes = dict(SMALL, store__url=str(root / f"{name}.zarr"))
    changes["observations__network"] = None
    changes |= {"observations__source": "file", "observations__url": str(obs_url)}
    return experiment_config(
        root, "qg-3dvar", f"{name}.yaml", observations__capacity=capacity, **changes
    )


def test_positions_on_grid_points_equal_the_gridded_network(osse):
    root, exp = osse
    table = storage.read_observation_table(exp.obs_url)
    points = exp.observing.points[table["location"].to_numpy()]
    at_points = table.drop(columns="location").assign(y=points[:, 0], x=points[:, 1])
    at_points.to_csv(root / "on-grid.csv", index=False)
    gridded = experiment_config(
        root,
        "qg-3dvar",
        "gridded.yaml",
        **dict(SMALL, store__url=str(root / "gridded.zarr")),
        observations__source="file",
        observations__url=exp.obs_url,
    )
    positioned = _positioned_config(root, "on-grid", root / "on-grid.csv", capacity=64)
    last = storage.cycle_id(exp.axis.point(CYCLES - 1))
    for config in (gridded, positioned):
        assert _flows.cycling_flow(str(config), end=last, block=CYCLES)["statuses"] == {
            "committed": CYCLES
        }
    a = store_arrays(root / "gridded.zarr", CYCLES)
    b = store_arrays(root / "on-grid.zarr", CYCLES)
    np.testing.assert_allclose(b["analysis"], a["analysis"], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(b["obs_mask"], a["obs_mask"])
    np.testing.assert_allclose(
        b["obs_y"][b["obs_mask"]],
        np.broadcast_to(exp.observing.points[:, 0], a["obs_mask"].shape)[a["obs_mask"]],
    )


def _off_grid_file(root, exp, path):
    """Observations of the truth at random off-grid positions, 10–60 of them at each time."""
    truth = storage.read_nature_run(exp.truth_url)
    rng = np.random.default_rng(3)
    rows = []
    for k in range(0, len(truth.time), exp.cfg.observations.every_steps):
        count = int(rng.integers(10, 61))
        where = rng.uniform(0, 32, (count, 2))
        field = np.asarray(truth.isel(time=k)).ravel()
        clean = np.asarray(vc.InterpolationObs.at(where, (32, 32))(field))
        sigma = rng.choice([0.01, 0.04], count)  # two instruments
        time = pd.Timestamp(truth.time.values[k]).strftime("%Y-%m-%dT%H:%M:%SZ")
        for (y, x), value, s in zip(
            where, clean + sigma * rng.normal(size=count), sigma, strict=True
        ):
            rows.append({"time": time, "y": y, "x": x, "value": value, "error_std": s})
    pd.DataFrame(rows).to_csv(path, index=False)
    return pd.DataFrame(rows)


def test_off_grid_positions_in_varying_numbers_run_cycle_by_cycle_and_in_blocks(osse):
    root, exp = osse
    table = _off_grid_file(root, exp, root / "off-grid.csv")
    per_cycle = _positioned_config(root, "off-grid", root / "off-grid.csv", capacity=64)
    blocked = _positioned_config(root, "off-grid-block", root / "off-grid.csv", capacity=64)
    last = storage.cycle_id(exp.axis.point(CYCLES - 1))
    assert _flows.cycling_flow(str(per_cycle), end=last)["statuses"] == {"committed": CYCLES}
    assert _flows.cycling_flow(str(blocked), end=last, block=CYCLES)["statuses"] == {
        "committed": CYCLES
    }
    a = store_arrays(root / "off-grid.zarr", CYCLES)
    b = store_arrays(root / "off-grid-block.zarr", CYCLES)
    for name in ("analysis", "background", "obs_mask", "obs_y", "obs_x", "obs_error_std"):
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-12, err_msg=name)
    assert len(set(a["n_obs"].tolist())) > 1  # a different number in each cycle
    # the store keeps each assimilated observation's position and error, as in the file
    row = a["obs_mask"][0].any(axis=1).nonzero()[0][0]
    when = pd.Timestamp(exp.axis.point(0)) + pd.Timedelta(seconds=int(row) * exp.step_seconds)
    first = table[table["time"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")]
    k = len(first)
    assert not a["obs_mask"][0, row, k:].any()
    np.testing.assert_allclose(a["obs_y"][0, row, :k], first["y"].to_numpy()[:k])
    np.testing.assert_allclose(a["obs_error_std"][0, row, :k], first["error_std"].to_numpy()[:k])
    assert np.isnan(a["obs_y"][0, row, k:]).all()  # empty slots
    scores = tasks.store_scores(str(root / "off-grid.zarr"), exp.truth_url, 0, CYCLES)
    assert scores["analysis"] < scores["background"]


def test_more_observations_than_the_capacity_names_the_cycle_and_count(osse):
    root, exp = osse
    _off_grid_file(root, exp, root / "crowded.csv")
    config = _positioned_config(root, "crowded", root / "crowded.csv", capacity=5)
    result = CliRunner().invoke(app, ["run", str(config), "--cycles", "1"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "cycle 2026-01-01T00:00Z" in text and "more than observations.capacity 5" in text


def test_positions_on_a_ring_at_its_sites_equal_the_located_observations(prefect_api, tmp_path):
    """Lorenz-96: the file's `location`s given as `site` positions (linear interpolation on
    the ring, wrapping around: site 40.0 is site 0) give the located observations' analyses."""
    n = 6
    located = experiment_config(tmp_path, "l96-3dvar", "located.yaml", cycling__lead_steps=[])
    _flows.simulate_flow(str(located), n, 0)
    exp = tasks.experiment(located)
    table = storage.read_observation_table(exp.obs_url)
    sites = table["location"].to_numpy().astype(float)
    sites[sites == 0] = 40.0  # the same point of the ring
    table.drop(columns="location").assign(site=sites).to_parquet(tmp_path / "sites.parquet")
    as_file = dict(observations__source="file", cycling__lead_steps=[])
    runs = {
        "a": experiment_config(
            tmp_path,
            "l96-3dvar",
            "a.yaml",
            store__url=str(tmp_path / "a.zarr"),
            observations__url=exp.obs_url,
            **as_file,
        ),
        "b": experiment_config(
            tmp_path,
            "l96-3dvar",
            "b.yaml",
            store__url=str(tmp_path / "b.zarr"),
            observations__url=str(tmp_path / "sites.parquet"),
            observations__capacity=40,
            **as_file,
        ),
    }
    last = storage.cycle_id(exp.axis.point(n - 1))
    for config in runs.values():
        assert _flows.cycling_flow(str(config), end=last, block=n)["statuses"] == {"committed": n}
    a, b = store_arrays(tmp_path / "a.zarr", n), store_arrays(tmp_path / "b.zarr", n)
    np.testing.assert_allclose(b["analysis"], a["analysis"], rtol=0, atol=1e-10)
    assert "obs_site" in b and np.nanmax(b["obs_site"]) == 40.0
