"""The example plugin package (`examples/ks`, installed as a user installs a package) end to
end through the CLI as a user runs it: `simulate`, `run` and `report` on its 3DVar and
strong-4DVar configs, the model and its cubic observation operator named by their entry
points; the analysis beats the background."""

from pathlib import Path

import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

import storage
import tasks
from flows.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ks" / "experiments"
CYCLES, SPINUP = 24, 6


@pytest.mark.parametrize("name, per_cycle", [("ks-3dvar", 3), ("ks-4dvar", 0)])
def test_the_example_runs_end_to_end_through_the_cli(prefect_api, tmp_path, name, per_cycle):
    """`per_cycle` cycles one flow run each, then the rest resumed in one block."""
    data = yaml.safe_load((EXAMPLE / f"{name}.yaml").read_text())
    data["store"]["url"] = str(tmp_path / "store.zarr")
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(data))
    cli = CliRunner()
    commands = [["simulate", str(config), "--cycles", str(CYCLES)]]
    if per_cycle:
        commands.append(["run", str(config), "--cycles", str(per_cycle)])
    commands.append(["run", str(config), "--cycles", str(CYCLES), "--block", str(CYCLES)])
    for args in commands:
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
    exp = tasks.experiment(config)
    assert type(exp.model).__name__ == "KuramotoSivashinsky"  # from the entry point
    assert type(exp.observing.operator).__name__ == "CubicObs"
    result = cli.invoke(
        app, ["report", exp.store_url, "--out", str(tmp_path / "report"), "--truth", exp.truth_url]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "summary.md").exists()
    status = xr.open_zarr(exp.store_url).status.values[:CYCLES]
    assert [storage.STATUS[s] for s in status] == ["committed"] * CYCLES
    scores = tasks.store_scores(exp.store_url, exp.truth_url, SPINUP, CYCLES)
    assert scores["analysis"] < 0.9 * scores["background"], scores
