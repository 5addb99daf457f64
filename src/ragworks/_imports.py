"""Imports by name: the object a `module:attr` spec names, and packages' lazy attributes."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from ragworks.errors import ConfigError


def import_object(spec: str, *, what: str, form: str = "module:attr") -> Any:  # Any: whatever spec names
    """Return `attr` of `module` for a `module:attr` spec; a bad spec is a ConfigError naming `what`."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"Write a {what} as '{form}', got {spec!r}.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        hint = "Check the module path and the name."
        raise ConfigError(f"Cannot import {what} {spec!r}: {exc}. {hint}") from exc


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `name` from `where[name]` on first use (PEP 562).

    Packages use it so `import ragworks.x` stays light: MLflow, LangGraph and FastAPI load only
    when a name that needs them is used.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
