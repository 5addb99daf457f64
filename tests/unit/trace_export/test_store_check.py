"""The startup check of the tracking store answers in seconds, with one line naming the fix."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from ragworks.errors import ConfigError
from ragworks.trace_export.store_check import check_tracking_store


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_database_on_a_closed_port_is_reported_at_once() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"unreachable \(connection refused at 127.0.0.1:{port}\)") as info:
        check_tracking_store(f"postgresql://ada:secret@127.0.0.1:{port}/mlflow")
    assert time.monotonic() - started < 5
    assert "secret" not in str(info.value)  # the password is never shown
    assert "\n" not in str(info.value) and "MLFLOW_TRACKING_URI" in str(info.value)


def test_a_sqlite_file_under_a_regular_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_tracking_store(f"sqlite:///{tmp_path}/a-file/sub/mlflow.db")


def test_a_new_sqlite_store_in_a_missing_folder_is_fine(tmp_path: Path) -> None:
    check_tracking_store(f"sqlite:///{tmp_path}/new/folder/mlflow.db")
    assert (tmp_path / "new" / "folder" / "mlflow.db").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "databricks", "sqlite:///:memory:"])
def test_other_stores_are_not_checked_here(uri: str) -> None:
    check_tracking_store(uri)  # MLflow's own client reports on those
