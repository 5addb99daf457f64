"""`--experiment` and `tracking.experiment`: the experiment `serve` hands its workers, `chat` traces to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
from typer.testing import CliRunner

from ragworks.cli import app
from ragworks.config import AgentConfig
from ragworks.errors import ConfigError
from ragworks.serving import server
from ragworks.serving.app import SPEC_ENV, ServeSpec, spec_from_env
from ragworks.trace_export.experiment import use_experiment

runner = CliRunner()


@pytest.fixture()
def specs(monkeypatch: pytest.MonkeyPatch) -> list[ServeSpec]:
    """The specs `ragworks serve` would run (nothing is served)."""
    seen: list[ServeSpec] = []
    monkeypatch.setattr(server, "run_server", lambda spec, **_: seen.append(spec))
    return seen


def _config(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "agent.yaml"
    AgentConfig.load(fields).to_yaml(path)
    return path


def test_serve_takes_the_configs_experiment_and_the_option_wins(
    tmp_path: Path, specs: list[ServeSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, tracking={"experiment": "from-config"})
    port = ["--port", "8765"]
    assert runner.invoke(app, ["serve", "--config", str(config), *port]).exit_code == 0
    assert runner.invoke(app, ["serve", "-c", str(config), "--experiment", "chosen", *port]).exit_code == 0
    assert runner.invoke(app, ["serve", "-c", str(_config(tmp_path)), *port]).exit_code == 0
    assert [spec.experiment for spec in specs] == ["from-config", "chosen", None]
    monkeypatch.setenv(SPEC_ENV, specs[1].to_json())  # what --workers hand their processes
    assert spec_from_env().experiment == "chosen"


def test_chat_with_experiment_traces_there(
    tmp_path: Path, docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_TRACE_SAMPLING_RATIO", raising=False)
    original = mlflow.get_tracking_uri()
    mlflow.tracing.reset()
    try:
        result = runner.invoke(app, ["chat", "What is the index?", "-i", docs_index, "--experiment", "chats"])
        assert result.exit_code == 0, result.output
        mlflow.flush_trace_async_logging()
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("chats")
        assert experiment is not None
        assert len(client.search_traces(locations=[experiment.experiment_id])) == 1
    finally:
        mlflow.set_tracking_uri(original)
        mlflow.tracing.reset()


def test_a_deleted_experiment_is_one_clear_error(tmp_path: Path) -> None:
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment_id = use_experiment("gone")
        assert use_experiment("gone") == experiment_id  # an existing one is reused
        mlflow.MlflowClient().delete_experiment(experiment_id)
        with pytest.raises(ConfigError, match="'gone' is deleted"):
            use_experiment("gone")
    finally:
        mlflow.set_tracking_uri(original)
