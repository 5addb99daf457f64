"""Failures of any command: one line and exit 1; tracebacks only with --debug; click's exits untouched."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import ragworks
from ragworks.cli_errors import handle_errors, set_debug
from ragworks.errors import ConfigError

runner = CliRunner()


@pytest.fixture
def app() -> Iterator[typer.Typer]:
    """A one-command app whose command raises what `--raise` names."""
    app = typer.Typer()

    @app.command()
    @handle_errors
    def run(kind: str) -> None:
        if kind == "config":
            raise ConfigError("retriever.index is not set: add it to agent.yaml.")
        if kind == "bug":
            raise KeyError("boom")
        if kind == "exit":
            raise typer.Exit(3)
        if kind == "usage":
            raise typer.BadParameter("must be positive")
        if kind == "interrupt":
            raise KeyboardInterrupt

    yield app
    set_debug(False)


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("config", "Error: retriever.index is not set: add it to agent.yaml."),
        ("bug", "Error: KeyError: 'boom'"),
        ("interrupt", "Error: Interrupted."),
    ],
)
def test_a_failure_is_one_line_and_exit_1(app: typer.Typer, kind: str, line: str) -> None:
    result = runner.invoke(app, [kind])
    assert result.exit_code == 1
    assert result.output.strip() == line


def test_debug_adds_the_traceback(app: typer.Typer) -> None:
    set_debug(True)
    result = runner.invoke(app, ["bug"])
    assert result.exit_code == 1
    assert "Traceback" in result.output and result.output.strip().endswith("Error: KeyError: 'boom'")


def test_clicks_own_exits_and_usage_errors_keep_their_codes(app: typer.Typer) -> None:
    assert runner.invoke(app, ["exit"]).exit_code == 3
    usage = runner.invoke(app, ["usage"])
    assert usage.exit_code == 2 and "must be positive" in usage.output and "BadParameter" not in usage.output


def test_no_commands_module_imports_the_cli() -> None:
    # Each area's commands register into the CLI; importing the CLI back would be a cycle.
    root = Path(ragworks.__file__).parent
    for path in root.rglob("commands.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "ragworks.cli" not in imported, path
