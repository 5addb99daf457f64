"""The `ragworks eval` group: `eval SUITE ...` runs a suite, `eval <subcommand> ...` runs that subcommand.

A first argument that names no subcommand (a suite path, or an option such as `--config`) is handed to
the default command, so `ragworks eval suite.yaml --config agent.yaml` keeps working beside
`ragworks eval export-feedback ...`. Each subcommand is one `eval_app.command(...)` line in
`eval/commands.py`'s `register`.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

DEFAULT_COMMAND = "run"
_HELP = ("-h", "--help")


class SuiteOrSubcommandGroup(TyperGroup):
    """A click group that sends arguments naming no subcommand to its `run` command."""

    # Any: the context's class is click's before typer 0.29 and typer's own copy of click after.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Prefix `run` unless the first argument is a subcommand or a help flag."""
        if args and args[0] not in self.commands and args[0] not in _HELP:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


def make_eval_app() -> typer.Typer:
    """A fresh `eval` sub-app whose bare form (`eval SUITE ...`) is the `run` subcommand."""
    return typer.Typer(
        name="eval",
        cls=SuiteOrSubcommandGroup,
        help="Evaluate agents (ragworks eval SUITE ... is ragworks eval run SUITE ...) and build suites.",
        context_settings={"help_option_names": list(_HELP)},
        no_args_is_help=True,
        add_completion=False,
    )
