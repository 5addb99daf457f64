"""`ragworks eval`: a bare suite argument still runs the suite; subcommands are found by name."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ragworks.cli import app

runner = CliRunner()


def test_bare_suite_argument_runs_the_suite_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "suite.yaml")])
    assert result.exit_code == 1
    assert "Say what to evaluate" in result.output


def test_an_option_first_still_reaches_the_suite_command(tmp_path: Path) -> None:
    args = ["eval", "--config", str(tmp_path / "a.yaml"), str(tmp_path / "missing.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_run_is_also_a_named_subcommand_and_help_lists_the_group(tmp_path: Path) -> None:
    named = runner.invoke(app, ["eval", "run", str(tmp_path / "suite.yaml")])
    assert named.exit_code == 1 and "Say what to evaluate" in named.output
    listed = runner.invoke(app, ["eval", "-h"])
    assert listed.exit_code == 0 and "run" in listed.output and "Commands" in listed.output


def test_export_feedback_is_a_subcommand_with_required_options(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["eval", "-h"])
    assert "export-feedback" in listed.output
    missing = runner.invoke(app, ["eval", "export-feedback", "-o", str(tmp_path / "s.yaml")])
    assert missing.exit_code == 2 and "--experiment" in missing.output
