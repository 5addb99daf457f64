"""The shared Databricks workspace client: missing auth is one ConfigError naming the feature."""

from __future__ import annotations

import pytest

from ragworks._databricks import workspace_client
from ragworks.errors import ConfigError


def test_missing_auth_names_the_feature(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    pytest.importorskip("databricks.sdk")
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", f"{tmp_path}/none.cfg")
    with pytest.raises(ConfigError, match="not configured for ragworks deploy"):
        workspace_client("ragworks deploy")
