from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app


def test_info_lists_the_stack_and_devices():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "optimistix" in result.output and "prefect" in result.output
    assert "JAX devices: " in result.output
    assert "kuramoto_sivashinsky" in result.output  # the example plugin package, installed


def test_no_arguments_shows_help():
    result = CliRunner().invoke(app, [])
    assert "info" in result.output


def test_validate(tmp_path):
    from pathlib import Path

    good = Path(__file__).resolve().parents[1] / "configs" / "l96-4dvar.yaml"
    result = CliRunner().invoke(app, ["validate", str(good)])
    assert result.exit_code == 0 and "valid" in result.output and "strong_4dvar" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("K: 40", "K: 2, colour: red"))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "model.K" in result.output and "unknown key" in result.output


def test_status_and_report(tmp_path):
    import numpy as np

    import storage as st

    layout = st.StoreLayout(
        state_dims=(("site", 4),), window_offsets_s=(0,), lead_offsets_s=(), obs_size=4
    )
    with st.CycleStore.create(
        tmp_path / "s.zarr", layout, "2026-01-01T00:00Z", "PT6H", experiment="cli"
    ) as s:
        for c in range(3):
            s.write_cycle(
                s.axis.point(c),
                {"analysis": np.ones((1, 4)), "background": np.zeros((1, 4)), "iterations": 3},
            )
        s.mark(s.axis.point(3), "failed")
    result = CliRunner().invoke(app, ["status", str(tmp_path / "s.zarr")], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "committed 3" in result.output and "failed 1" in result.output
    assert "first cycle still to run: 2026-01-01T18:00Z" in result.output
    result = CliRunner().invoke(
        app, ["report", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "summary.md").exists() and (tmp_path / "r" / "rmse.png").exists()
    result = CliRunner().invoke(app, ["status", str(tmp_path / "missing.zarr")])
    assert result.exit_code == 2 and "no store at" in result.output


def test_cycling_commands_name_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\nmodel: {name: lorenz96, K: 2}\n")
    for command in (
        ["run", str(bad)],
        ["simulate", str(bad)],
        ["backfill", str(bad), "--start", "2026-01-01T00:00Z", "--end", "2026-01-02T00:00Z"],
    ):
        result = CliRunner().invoke(app, command, terminal_width=200)
        assert result.exit_code == 2, result.output
        assert "bad.yaml" in result.output and "model.K" in result.output


def test_serve_and_deploy_need_a_real_server():
    import os

    config = str(Path(__file__).resolve().parents[1] / "configs" / "l96-3dvar.yaml")
    saved = os.environ.pop("PREFECT_API_URL", None)
    try:
        for command in (["serve", config], ["deploy", config, "--pool", "p"]):
            result = CliRunner().invoke(app, command, terminal_width=200)
            assert result.exit_code == 2, result.output
            assert "needs a running Prefect server" in result.output
            assert "vardax-cycle server" in result.output
        bad = CliRunner().invoke(
            app, ["deploy", config, "--pool", "p", "--crash-after", "20"], terminal_width=200
        )
    finally:
        if saved is not None:
            os.environ["PREFECT_API_URL"] = saved
    assert bad.exit_code == 2 and "--crash-after (20 s) must exceed --heartbeat" in bad.output


def test_run_on_a_finished_range_starts_no_prefect(tmp_path):
    """`run` over cycles the store holds as done answers from the store alone: no flow run,
    and (in a fresh process) Prefect is not even imported. A range with a cycle still to
    run, or a store made for another config, goes to the flow as before."""
    import subprocess
    import sys

    import yaml

    import tasks

    data = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "configs" / "l96-3dvar.yaml").read_text()
    )
    data["experiment"], data["store"] = "done-range", {"url": str(tmp_path / "s.zarr")}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    exp = tasks.experiment(config)
    with tasks.open_run(exp) as run:
        for k in range(3):
            run.store.mark(exp.axis.point(k), "skipped")
    first, third, fourth = (exp.axis.cycle(k) for k in (0, 2, 3))
    assert tasks.all_done(exp, first, third) == 3
    assert tasks.all_done(exp, first, fourth) is None
    result = CliRunner().invoke(app, ["run", str(config), "--cycles", "3"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "nothing to do; 3 already done" in result.output
    probe = (
        "import sys, tasks\n"
        f"exp = tasks.experiment({str(config)!r})\n"
        "n = tasks.all_done(exp, exp.axis.cycle(0), exp.axis.cycle(2))\n"
        "print(n, 'prefect' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "False"], out.stderr
    data["method"]["prior_cov"]["scale"] = 0.01
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    assert tasks.all_done(tasks.experiment(other), first, third) is None  # another identity


def test_server_settings_record_task_runs_in_batches_unless_the_user_says_otherwise():
    from flows._runtime import SERVER_DEFAULTS, server_environment

    key = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
    assert int(server_environment({})[key]) > 1  # Prefect's default, 1, stalls cycles on SQLite
    assert server_environment({key: "7", "X": "y"}) == SERVER_DEFAULTS | {key: "7", "X": "y"}
