from typer.testing import CliRunner

from flows.cli import app


def test_info_lists_the_stack_and_devices():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "optimistix" in result.output and "prefect" in result.output
    assert "JAX devices: " in result.output


def test_no_arguments_shows_help():
    result = CliRunner().invoke(app, [])
    assert "info" in result.output
