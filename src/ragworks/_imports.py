"""Import the object a `module:attr` spec names, with errors that say what to fix."""

from __future__ import annotations

import importlib
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
