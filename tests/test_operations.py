"""Operational cycling: the catch-up policies after an outage, late observations against
a cut-off, files still being written."""

import threading
import time

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _pipeline_helpers import experiment_config

import storage
import tasks
from flows import _flows, _operations


def _statuses(exp, n):
    return [
        str(s) for s in storage.CycleStore.open(exp.store_url).status_table()["status"].iloc[:n]
    ]


@pytest.mark.parametrize(
    "policy, ran, skipped",
    [
        ("all", list(range(4, 10)), []),
        ("latest", [9], [4, 5, 6, 7, 8]),
        ("max_lag", [7, 8, 9], [4, 5, 6]),
    ],
)
def test_catch_up_after_an_outage(prefect_api, tmp_path, policy, ran, skipped):
    ops = {"catch_up": policy} | ({"max_lag": "PT12H"} if policy == "max_lag" else {})
    cfg = experiment_config(tmp_path, "l96-3dvar", experiment=f"ops-{policy}", operations=ops)
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 12, 0)
    at = lambda k: storage.iso(exp.axis.point(k) + exp.axis.interval)  # noqa: E731 (window k ended)
    for k in range(4):  # on time: each scheduled run does the one cycle just due
        on_time = _operations.scheduled_flow(str(cfg), at=at(k))
        assert on_time["ran"] == [storage.cycle_id(exp.axis.point(k))]
    # an outage: the next run happens when cycle 9's window has ended
    out = _operations.scheduled_flow(str(cfg), at=at(9))
    assert out["ran"] == [storage.cycle_id(exp.axis.point(k)) for k in ran]
    assert out["skipped"] == [storage.cycle_id(exp.axis.point(k)) for k in skipped]
    status = _statuses(exp, 11)
    assert [status[k] for k in skipped] == ["skipped"] * len(skipped)
    assert all(status[k] in ("committed", "degraded") for k in range(10) if k not in skipped)
    assert status[10] == "empty"  # not due yet
    s = storage.CycleStore.open(exp.store_url)
    if skipped:
        assert "catch-up policy" in s.status_table()["status_reason"].iloc[skipped[0]]
        # the first cycle after the gap starts from the last analysis carried across it
        last = s.read_cycle(exp.axis.point(3))["analysis"][-1]
        carried = exp.model.rollout(jnp.asarray(last), len(skipped) * exp.window)[-1]
        np.testing.assert_allclose(s.read_cycle(exp.axis.point(ran[0]))["background"][0], carried)
    # nothing runs twice
    again = _operations.scheduled_flow(str(cfg), at=at(9))
    assert again["ran"] == [] and again["skipped"] == []


def _live_config(tmp_path, name, cutoff, **changes):
    """l96-3dvar with one observation file per cycle and cycle 2's window ending now."""
    now = pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")  # cycle 2's window ends now
    origin = now - 3 * pd.Timedelta(hours=6)
    cfg = experiment_config(
        tmp_path,
        "l96-3dvar",
        experiment=name,
        cycling__origin=origin.strftime("%Y-%m-%dT%H:%M:%SZ"),
        observations__url=str(tmp_path / "obs" / "{cycle_id}.parquet"),
        observations__cutoff=cutoff,
        observations__poll_seconds=0.2,
        observations__stable_seconds=0.6,
        **changes,
    )
    (tmp_path / "obs").mkdir()
    exp = tasks.experiment(cfg)
    _flows.simulate_flow(str(cfg), 3, 0)
    late = tmp_path / "obs" / f"{storage.cycle_id(exp.axis.point(2))}.parquet"
    return cfg, exp, late


def test_late_file_before_the_cutoff_is_assimilated_once_stable(prefect_api, tmp_path):
    cfg, exp, late = _live_config(tmp_path, "late-ok", "PT90S")
    content = late.read_bytes()
    late.unlink()

    def deliver():  # arrives after 2 s, written slowly in pieces
        time.sleep(2.0)
        with open(late, "wb") as f:
            for k in range(0, len(content), max(1, len(content) // 6)):
                f.write(content[k : k + max(1, len(content) // 6)])
                f.flush()
                time.sleep(0.25)

    thread = threading.Thread(target=deliver)
    thread.start()
    t0 = time.perf_counter()
    out = _flows.cycling_flow(str(cfg), end=storage.cycle_id(exp.axis.point(2)))
    waited = time.perf_counter() - t0
    thread.join()
    assert out["statuses"] == {"committed": 3}
    assert waited > 2.0
    row = storage.CycleStore.open(exp.store_url).status_table().iloc[2]
    assert row["n_obs"] == 40 and row["status_reason"] == ""


@pytest.mark.parametrize("policy", ["forecast_only", "fail"])
def test_after_the_cutoff_the_late_policy_applies(prefect_api, tmp_path, policy):
    cfg, exp, late = _live_config(
        tmp_path, f"late-{policy.replace('_', '-')}", "PT2S", observations__late_policy=policy
    )
    late.unlink()
    end = storage.cycle_id(exp.axis.point(2))
    if policy == "fail":
        with pytest.raises(storage.ObservationError, match=r"late_policy: fail"):
            _flows.cycling_flow(str(cfg), end=end)
        assert _statuses(exp, 3) == ["committed", "committed", "empty"]
        return
    out = _flows.cycling_flow(str(cfg), end=end)
    assert out["statuses"] == {"committed": 2, "degraded": 1}
    row = storage.CycleStore.open(exp.store_url).status_table().iloc[2]
    assert row["status_reason"].startswith("forecast-only: no observation file")
    assert "by the cut-off" in row["status_reason"]
