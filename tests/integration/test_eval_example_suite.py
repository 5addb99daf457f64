"""The example suite runs offline against the real agent and logs a run MLflow can read back."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import typer
from typer.testing import CliRunner

from ragworks.eval.commands import register
from ragworks.eval.runner import run_example_suite
from ragworks.eval.scorers import CITATION_SCORERS, SCORER_NAMES
from ragworks.eval.suite import example_suite


@pytest.fixture(scope="module")
def shipped_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("eval-docs")
    ingest([shipped_docs()], root / "index", embeddings="hashing")
    return root / "index"


@pytest.fixture
def tracking(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id="0")  # forget an experiment set against another store
    return uri


def test_example_suite_logs_metrics_and_trace_assessments(shipped_index: Path, tracking: str) -> None:
    from ragworks.agents import build_agent

    agent = build_agent({"retriever": {"type": "local", "index": str(shipped_index), "k": 3}})
    result = run_example_suite(
        agent, judge="offline:lexical", scorers=list(SCORER_NAMES), k=3, fail_under={"recall_at_k": 0.5}
    )
    assert result.passed, result.summary()
    assert set(result.metrics) == set(SCORER_NAMES)
    assert result.metrics["recall_at_k"].mean >= 0.8
    assert result.metrics["faithfulness"].mean >= 0.8  # the offline agent quotes its sources

    runs = mlflow.search_runs(experiment_names=["ragworks-quickstart"])
    row = runs[runs.run_id == result.run_id].iloc[0]
    for name in SCORER_NAMES:
        assert row[f"metrics.{name}/mean"] == pytest.approx(result.metrics[name].mean)
        assert row[f"metrics.{name}/ci_low"] <= row[f"metrics.{name}/mean"] <= row[f"metrics.{name}/ci_high"]
    assert row["tags.ragworks.eval.passed"] == "true"

    traces = mlflow.search_traces(run_id=result.run_id, return_type="list")
    assert len(traces) == len(example_suite().rows)
    for trace in traces:
        feedback = {a.name: a for a in trace.info.assessments if a.name in SCORER_NAMES}
        # an answer that declines to answer makes no claim, so it has no citation to check
        assert set(feedback) >= set(SCORER_NAMES) - set(CITATION_SCORERS)
        assert feedback["faithfulness"].rationale

    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert {"eval_results.json", "eval_report.html"} <= artifacts
    html = mlflow.artifacts.load_text(f"runs:/{result.run_id}/eval_report.html")
    assert html.count("<svg") == len(SCORER_NAMES)


def test_cli_eval_thresholds_and_baseline(shipped_index: Path, tracking: str, tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(f"retriever:\n  type: local\n  index: {shipped_index}\n  k: 3\n", encoding="utf-8")
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        '{"inputs": "What is ragworks?", "expectations": {"expected_doc_ids": ["overview.md"]}}\n'
        '{"inputs": "How do I serve an agent?", "expectations": {"expected_doc_ids": ["serving.md"]}}\n',
        encoding="utf-8",
    )
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    runner = CliRunner()
    args = [
        "eval",
        str(suite),
        "--config",
        str(config),
        "--judge",
        "offline:lexical",
        "-s",
        "mrr",
        "-s",
        "faithfulness",
    ]
    ok = runner.invoke(app, [*args, "--fail-under", "mrr=0.1"])
    assert ok.exit_code == 0, ok.output
    assert "mrr" in ok.output and "PASSED" in ok.output
    base_run = mlflow.search_runs(order_by=["start_time DESC"]).iloc[0].run_id

    failed = runner.invoke(app, [*args, "--fail-under", "mrr=1.01"])
    assert failed.exit_code == 1
    assert "FAIL mrr" in failed.output and "failed" in failed.output

    # The same agent against its own earlier run, paired row by row (the regression path is in
    # test_eval_paired.py).
    same = runner.invoke(app, [*args, "--baseline", base_run])
    assert same.exit_code == 0 and "2 rows paired" in same.output and "no regressions" in same.output

    missing = runner.invoke(app, ["eval", str(suite)])
    assert missing.exit_code == 1 and "--config" in missing.output
