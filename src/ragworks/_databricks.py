"""The Databricks workspace client ragworks' Databricks features share: the SDK's unified auth, one error."""

from __future__ import annotations

from typing import Any

from ragworks.errors import ConfigError


def workspace_client(purpose: str) -> Any:  # Any: databricks.sdk.WorkspaceClient, an optional extra
    """A `WorkspaceClient` from unified auth; a missing SDK or auth is a ConfigError naming `purpose`."""
    try:
        from databricks.sdk import WorkspaceClient
    except ImportError:
        raise ConfigError(f"{purpose} needs databricks-sdk: pip install 'ragworks[databricks]'") from None
    try:
        return WorkspaceClient()
    except Exception as exc:  # the SDK's errors carry its own advice, never the secret
        raise ConfigError(
            f"Databricks authentication is not configured for {purpose} ({exc}); set DATABRICKS_HOST and "
            "DATABRICKS_TOKEN, a profile (DATABRICKS_CONFIG_PROFILE), or a service principal's credentials."
        ) from None
