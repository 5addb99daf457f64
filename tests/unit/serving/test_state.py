"""The conversation store's settings: where the default lives, `off`, paths from the config file, secrets."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest

from ragworks.config import AgentConfig
from ragworks.serving.state import (
    STATE_DIR,
    Retention,
    StoredResponse,
    default_state_path,
    open_state,
)


def test_the_default_store_sits_beside_a_sqlite_tracking_store(tmp_path: Path) -> None:
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        assert default_state_path() == tmp_path.resolve() / STATE_DIR / "conversations.db"
    finally:
        mlflow.set_tracking_uri(before)


@pytest.mark.parametrize("setting", ["off", "none", "OFF"])
def test_off_keeps_no_store(setting: str) -> None:
    assert open_state(setting) is None


def test_a_relative_state_path_is_read_from_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "agent.yaml").write_text("serving:\n  state: ./state/c.db\n  max_age_days: 2\n")
    config = AgentConfig.from_yaml(folder / "agent.yaml")
    assert config.serving.state == str(folder.resolve() / "state" / "c.db")
    (folder / "off.yaml").write_text("serving:\n  state: off\n")
    assert AgentConfig.from_yaml(folder / "off.yaml").serving.state == "off"


def test_counts_and_the_trace_lookup(tmp_path: Path) -> None:
    store = open_state(str(tmp_path / "s.db"), retention=Retention(max_responses=10))
    assert store is not None
    now = time.time()
    for n, thread in enumerate(["a", "a", "b"]):
        store.put(
            StoredResponse(id=f"r{n}", thread_id=thread, checkpoint_id=None, trace_id=None, created_at=now)
        )
    assert (store.count_responses(), store.count_conversations()) == (3, 2)
    assert store.trace_id_for_response("r0") is None and store.trace_id_for_response("unknown") is None
    assert store.delete("r0") and not store.delete("r0")
    assert store.get("r1") is not None and store.get("r1").thread_id == "a"  # type: ignore[union-attr]
    store.close()
