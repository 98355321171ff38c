"""Bad input and broken lineage, as a user meets them at the command line: each ends in one
message naming the file, key, value, cycle or store at fault and the exit code of its kind
(2 bad input), and nothing already stored changes. No Prefect: every refusal here comes
before a flow would start."""

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from _store_helpers import chunk_bytes
from typer.testing import CliRunner

import configs
import storage as st
import tasks
from flows.cli import app
from tasks._osse import osse_hash
from tasks._scores import check_truth as truth_lineage

ROOT = Path(__file__).resolve().parents[1]


def _data(tmp_path) -> dict:
    data = yaml.safe_load((ROOT / "configs" / "l96-3dvar.yaml").read_text())
    data["experiment"] = "faults"
    data["store"] = {"url": str(tmp_path / "run" / "store.zarr")}
    return data


def _config(tmp_path, data=None, name="c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data if data is not None else _data(tmp_path)))
    return path


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=300)


def _says(result, *parts, code=2):
    assert result.exit_code == code, result.output
    for part in parts:
        assert part in " ".join(result.output.split()), (part, result.output)
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "kind, says",
    [("directory", "is a directory"), ("binary", "not a text file"), ("missing", "not found")],
)
def test_a_config_path_that_is_not_a_yaml_file(tmp_path, kind, says):
    path = tmp_path / "c.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    for command in ("validate", "run", "simulate"):
        _says(_invoke(command, path), str(path), says)


@pytest.mark.parametrize(
    "value, says",
    [("abc", "valid number"), (float("nan"), "finite number"), (0.0, "greater than 0")],
)
def test_a_bad_error_std_names_the_file_key_and_value(tmp_path, value, says):
    data = _data(tmp_path)
    data["observations"]["error_std"] = value
    path = _config(tmp_path, data)
    _says(_invoke("validate", path), str(path), "observations.error_std", says)


def test_an_observation_file_with_a_non_positive_error_is_named(tmp_path):
    url = tmp_path / "obs.csv"
    times = ["2026-01-01T06:00Z", "2026-01-01T12:00Z"]
    error = np.array([[1.0, 0.5], [0.0, 1.0]])
    table = st.observation_table(times, [0, 1], np.ones((2, 2)), error)
    st.write_observation_table(url, table)
    with pytest.raises(st.ObservationError, match=r"obs.csv.*'error_std' holds 0.0 in row 3"):
        st.read_observation_table(url)
    assert st.ObservationError("x").exit_code == 2


def test_paths_in_a_config_are_relative_to_its_file(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "experiments"
    folder.mkdir(parents=True)
    data = _data(tmp_path)
    data["store"] = {"url": "../runs/store.zarr"}
    path = _config(folder, data)
    here = configs.load_config(path).store.url
    monkeypatch.chdir(tmp_path)  # the same config from another working directory
    assert configs.load_config(path).store.url == here == str(tmp_path / "project/runs/store.zarr")
    for kept in ("s3://bucket/store.zarr", "/abs/store.zarr", "file:///x/store.zarr"):
        assert configs.resolve_path(kept, folder) == kept
    shipped = configs.load_config(ROOT / "configs" / "l96-3dvar.yaml").store.url
    assert shipped == os.path.normpath(ROOT / "runs" / "l96-3dvar" / "store.zarr")


def _committed_store(exp, n=2, obs_hash=""):
    """The experiment's store with `n` committed cycles (as a run leaves it)."""
    with tasks.open_run(exp) as run:
        for k in range(n):
            run.store.write_cycle(
                exp.axis.point(k),
                {"analysis": np.full((exp.window + 1, 40), float(k)), "obs_hash": obs_hash},
                "committed",
            )
    return st.CycleStore.open(exp.store_url)


def test_simulate_refuses_to_replace_the_osse_of_done_cycles(tmp_path):
    path = _config(tmp_path)
    exp = tasks.experiment(path)
    tasks.write_osse.fn(exp, 4, 0)
    before = {p: p.read_bytes() for p in Path(exp.truth_url).rglob("*") if p.is_file()}
    before[Path(exp.obs_url)] = Path(exp.obs_url).read_bytes()
    _committed_store(exp)
    stored = chunk_bytes(Path(exp.store_url))
    for command in ("simulate", "demo"):  # demo: its OSSE covers 4 cycles, not 8
        result = _invoke(command, path, "--cycles", 8)
        _says(result, "holds 2 cycles done", exp.truth_url, "--force")
    assert {p: p.read_bytes() for p in before} == before
    assert chunk_bytes(Path(exp.store_url)) == stored


def test_a_run_refuses_to_continue_from_cycles_of_replaced_observations(tmp_path):
    exp = tasks.experiment(_config(tmp_path))
    tasks.write_osse.fn(exp, 4, 0)
    first = tasks.read_observations(exp, [exp.axis.cycle(1)])[0]
    _committed_store(exp, obs_hash=first.content_hash)
    with tasks.open_run(exp) as run:
        tasks.check_lineage(run, 2)  # the same observations: it continues
        tasks.check_lineage(run, 0)  # nothing before the origin
    tasks.write_osse.fn(exp, 4, 1)  # another OSSE where the first was
    stored = chunk_bytes(Path(exp.store_url))
    with tasks.open_run(exp) as run, pytest.raises(st.ObservationError) as err:
        tasks.check_lineage(run, 2)
    assert chunk_bytes(Path(exp.store_url)) == stored
    message = str(err.value)
    assert exp.axis.cycle(1).id in message and exp.obs_url in message
    assert first.content_hash[:12] in message and "--rerun" in message
    assert err.value.exit_code == 2


def _nature_run(url, exp, shape=(40,), osse_hash=None):
    times = exp.model_times(2 * exp.window)
    states = np.zeros((len(times), *shape))
    attrs = {"osse_hash": osse_hash} if osse_hash else None
    st.write_nature_run(url, times, states, attrs=attrs)


def test_report_checks_that_the_truth_belongs_to_the_store(tmp_path):
    exp = tasks.experiment(_config(tmp_path))
    _committed_store(exp)
    own = osse_hash(exp.identity)
    _nature_run(tmp_path / "other.zarr", exp, osse_hash="0" * 64)
    _nature_run(tmp_path / "wide.zarr", exp, shape=(80,), osse_hash=own)
    out = tmp_path / "report"
    stored = chunk_bytes(Path(exp.store_url))
    result = _invoke("report", exp.store_url, "--out", out, "--truth", tmp_path / "other.zarr")
    _says(result, "other.zarr", "another OSSE", "faults")
    result = _invoke("report", exp.store_url, "--out", out, "--truth", tmp_path / "wide.zarr")
    _says(result, "wide.zarr", "(80,)", "(40,)")
    assert not out.exists() or not any(out.iterdir())
    assert chunk_bytes(Path(exp.store_url)) == stored
    _nature_run(tmp_path / "own.zarr", exp, osse_hash=own)  # its own truth passes
    truth_lineage(st.CycleStore.open(exp.store_url), tmp_path / "own.zarr")


def test_a_bad_cycle_range_is_named_before_prefect_starts(tmp_path):
    path = _config(tmp_path)
    _says(_invoke("run", path, "--start", "yesterday"), "yesterday")
    _says(_invoke("backfill", path, "--start", "2026-01-02T00:00Z", "--end", "2026-01-01T00:00Z"))


def test_a_store_made_for_another_config_names_the_keys(tmp_path):
    exp = tasks.experiment(_config(tmp_path))
    _committed_store(exp)
    data = _data(tmp_path)
    data["method"]["prior_cov"]["scale"] = 0.01
    other = _config(tmp_path, data, "other.yaml")
    stored = chunk_bytes(Path(exp.store_url))
    with pytest.raises(st.StoreMismatchError) as err:
        tasks.open_store(tasks.experiment(other))
    assert "method.prior_cov.scale: store has 0.0075, this config 0.01" in str(err.value)
    _says(_invoke("validate", other), "method.prior_cov.scale: store has 0.0075")
    assert chunk_bytes(Path(exp.store_url)) == stored


def _set(data, dotted, value):
    *path, last = dotted.split(".")
    node = data
    for key in path:
        node = node[key]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value


_DROP = object()


# (key, a bad value, what the message names, what it says): each refused by `validate` and
# `run` alike
BAD_KEYS = [
    ("method.name", "4dvra", "method.name", "4dvra"),
    ("model.K", "forty", "model.K", "valid integer"),
    ("model.colour", "blue", "model.colour", "unknown key"),
    ("cycling.window_steps", 7, "cycling.interval", "window_steps (7) whole seconds"),
    ("cycling.origin", "the first of May", "cycling.origin", "the first of May"),
    ("store.field_chunk", 3, "field_chunk (3)", "must divide block"),
    ("observations.every_steps", 0, "observations.every_steps", "greater than or equal to 1"),
    ("model", _DROP, "model", "Field required"),
]


@pytest.mark.parametrize("key, value, named, says", BAD_KEYS, ids=[k for k, *_ in BAD_KEYS])
def test_a_bad_config_key_is_named_by_validate_and_run(tmp_path, key, value, named, says):
    data = _data(tmp_path)
    _set(data, key, value)
    path = _config(tmp_path, data)
    for command in ("validate", "run"):
        _says(_invoke(command, path), str(path), named, says)
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("experiment: x\nmodel: {name: lorenz96\n")
    _says(_invoke("validate", path), str(path), "line")


@pytest.mark.parametrize("command", ["status", "verify", "report", "unlock"])
def test_a_reader_of_a_missing_or_foreign_store_says_which(tmp_path, command):
    _says(_invoke(command, tmp_path / "none.zarr"), "no store at", str(tmp_path / "none.zarr"))
    exp = tasks.experiment(_config(tmp_path))
    _nature_run(tmp_path / "truth.zarr", exp)  # a Zarr group, but not a store of cycles
    _says(_invoke(command, tmp_path / "truth.zarr"), "truth.zarr", "not a vardax-cycle store")
