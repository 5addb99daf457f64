"""How every `ragworks` command reports a failure: one readable line on stderr, then exit 1.

Each command function is wrapped in `handle_errors`. `--debug` (passed on by the CLI's callback
through `set_debug`) adds the traceback. This module knows nothing of the commands, so each area's
`commands.py` imports it without importing the CLI that registers them.

Example:
    >>> from ragworks.errors import ConfigError
    >>> @handle_errors
    ... def show() -> None:
    ...     raise ConfigError("retriever.index is not set: add it to agent.yaml.")
    >>> show()  # doctest: +SKIP
    Error: retriever.index is not set: add it to agent.yaml.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

from ragworks.errors import RagworksError

F = TypeVar("F", bound=Callable[..., Any])
_debug = {"on": False}
# Click's exits and usage errors, which click itself reports. Taken from typer: it re-exports click's
# classes, or (typer 0.29 and later) those of the copy of click it ships.
_CLICK_OWN: tuple[type[BaseException], ...] = (
    typer.Exit,
    typer.Abort,
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)


def set_debug(on: bool) -> None:
    """Show tracebacks (on) or only the one-line message (off) for the failures that follow."""
    _debug["on"] = on


def debug_enabled() -> bool:
    """True when `--debug` (or `RAGWORKS_DEBUG`) asked for tracebacks."""
    return _debug["on"]


def handle_errors(func: F) -> F:
    """Turn any error into one readable line and exit 1 (the traceback too with --debug).

    Click's own exits and usage errors pass through unchanged, with their own exit codes.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _CLICK_OWN:
            raise
        except RagworksError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("Interrupted.")
        except Exception as exc:
            fail(f"{type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def fail(message: str) -> NoReturn:
    """Print `Error: message` to stderr (after the current traceback with --debug) and exit 1."""
    if _debug["on"]:
        traceback.print_exc()
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)
