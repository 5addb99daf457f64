"""The citations scorer on the real offline agent and the shipped suite, through `ragworks eval`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import mlflow
import pytest
import typer
from typer.testing import CliRunner

from ragworks.eval.commands import register


@pytest.fixture(scope="module")
def agent_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("citations")
    ingest([shipped_docs()], root / "index", embeddings="hashing")
    config = root / "agent.yaml"
    config.write_text(f"retriever:\n  type: local\n  index: {root / 'index'}\n  k: 5\n", encoding="utf-8")
    return config


@pytest.fixture
def tracking(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id="0")
    return uri


def test_the_offline_agent_cites_the_sources_that_support_it(agent_config: Path, tracking: str) -> None:
    suite = resources.files("ragworks.data").joinpath("example_suite.yaml")
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    args = ["eval", str(suite), "--config", str(agent_config), "--judge", "offline:lexical"]
    done = CliRunner().invoke(app, [*args, "-s", "citations"])
    assert done.exit_code == 0, done.output
    assert "citation_precision" in done.output and "citation_recall" in done.output

    run = mlflow.search_runs(order_by=["start_time DESC"]).iloc[0]
    # The offline model quotes sentences of the source it cites: its citations should all hold.
    assert run["metrics.citation_precision/mean"] >= 0.95
    assert run["metrics.citation_recall/mean"] >= 0.95
    traces = mlflow.search_traces(run_id=run.run_id, return_type="list")
    names = {a.name for t in traces for a in t.info.assessments}
    assert {"citation_precision", "citation_recall"} <= names


def test_a_citation_metric_can_be_gated(agent_config: Path, tracking: str, tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"inputs": "What is ragworks?"}\n', encoding="utf-8")
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    base = ["eval", str(suite), "--config", str(agent_config), "--judge", "offline:lexical"]
    gate = ["-s", "citation_precision", "--fail-under", "citation_precision=1.01"]
    gated = CliRunner().invoke(app, [*base, *gate])
    assert gated.exit_code == 1 and "FAIL citation_precision" in gated.output
