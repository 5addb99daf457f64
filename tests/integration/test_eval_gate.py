"""`ragworks eval` refuses to pass when its judge cannot run: no key, a dead endpoint, every call failing.

The CLI runs a real agent (a tiny local index) and the real `openai` client against the OpenAI
stub on 127.0.0.1. A refused run exits 1 with one line that says why, and never prints PASSED;
`--allow-errors` reports the errors and passes. Threshold names and the judge are checked before
any row runs, so those refusals leave no MLflow run behind.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from ragworks.eval.commands import register
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

RELEVANT = StubReply(content='{"rating": 5, "noncommittal": false, "rationale": "on topic"}')


@pytest.fixture(scope="module")
def agent_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("eval-gate")
    docs = root / "docs"
    docs.mkdir()
    (docs / "alpha.md").write_text("Alpha is the first letter of the Greek alphabet.\n", encoding="utf-8")
    (docs / "beta.md").write_text("Beta is the second letter of the Greek alphabet.\n", encoding="utf-8")
    ingest([docs], root / "index", embeddings="hashing")
    config = root / "agent.yaml"
    config.write_text(f"retriever:\n  type: local\n  index: {root / 'index'}\n  k: 2\n", encoding="utf-8")
    return config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tracking store for the module (creating one costs seconds); each test has its experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('eval-gate-store')}/mlflow.db"


@pytest.fixture
def suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, request: pytest.FixtureRequest
) -> Path:
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment(experiment_id="0")
    monkeypatch.setattr(_Experiment, "name", request.node.name)
    monkeypatch.setenv("RAGWORKS_JUDGE_CACHE", str(tmp_path / "judge-cache.sqlite"))
    path = tmp_path / "suite.jsonl"
    path.write_text(
        '{"inputs": "What is alpha?", "expectations": {"expected_doc_ids": ["alpha.md"]}}\n'
        '{"inputs": "What is beta?", "expectations": {"expected_doc_ids": ["beta.md"]}}\n',
        encoding="utf-8",
    )
    return path


class _Experiment:
    name = ""
    """The running test's experiment (`--experiment`), so runs are counted per test."""


def _eval(suite: Path, config: Path, *extra: str) -> Result:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    args = ["eval", str(suite), "--config", str(config), "--judge", "openai:judge", "-s", "answer_relevance"]
    return CliRunner().invoke(app, [*args, "-s", "mrr", "--experiment", _Experiment.name, *extra])


def _runs() -> int:
    experiment = mlflow.get_experiment_by_name(_Experiment.name)
    return 0 if experiment is None else len(mlflow.search_runs([experiment.experiment_id]))


def _last_run() -> Any:
    experiment = mlflow.get_experiment_by_name(_Experiment.name)
    assert experiment is not None
    return mlflow.search_runs([experiment.experiment_id]).iloc[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_judge_without_a_key_is_refused_before_any_row(
    suite: Path, agent_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = _eval(suite, agent_config)
    assert result.exit_code == 1, result.output
    assert "OPENAI_API_KEY" in result.output
    assert "PASSED" not in result.output
    assert _runs() == 0  # refused before the run started


def test_a_dead_endpoint_is_refused_quickly_with_one_line(
    suite: Path, agent_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_free_port()}/v1")
    start = time.perf_counter()
    result = _eval(suite, agent_config)
    assert result.exit_code == 1, result.output
    assert time.perf_counter() - start < 30  # the preflight, not 2 rows x 5 attempts of backoff
    assert "unreachable" in result.output and "127.0.0.1" in result.output
    assert "PASSED" not in result.output
    assert _runs() == 0


@pytest.fixture
def failing_judge(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A judge endpoint that answers its model list but fails every chat call with a 500."""
    failure = StubReply(status=500, error="judge overloaded", retry_after_ms=1)
    with OpenAIStub(responder=lambda body: failure) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        yield stub


def test_every_judge_call_failing_fails_the_run(suite: Path, agent_config: Path, failing_judge: Any) -> None:
    result = _eval(suite, agent_config)
    assert result.exit_code == 1, result.output
    assert "ERROR answer_relevance: 2 of 2 rows errored, no row was scored (n=0)" in result.output
    first = "first error: EvalError: Judge judge failed on answer_relevance@v1 after 5 attempts: HTTP 500"
    assert first in result.output and "--allow-errors" in result.output
    assert "PASSED" not in result.output
    assert len(failing_judge.requests) == 2 * 5  # every row was tried, max_attempts each
    run = _last_run()
    assert run["tags.ragworks.eval.passed"] == "false"
    assert run["metrics.answer_relevance/errors"] == 2


def test_allow_errors_reports_the_errors_and_passes(
    suite: Path, agent_config: Path, failing_judge: Any
) -> None:
    result = _eval(suite, agent_config, "--allow-errors")
    assert result.exit_code == 0, result.output
    assert "ALLOWED ERROR answer_relevance: 2 of 2 rows errored" in result.output
    assert "PASSED (errors allowed)" in result.output
    assert _last_run()["tags.ragworks.eval.judge_errors"] == "true"


def test_a_judge_that_works_passes(suite: Path, agent_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIStub(responder=lambda body: RELEVANT) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        result = _eval(suite, agent_config, "--fail-under", "answer_relevance=0.9")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().splitlines()[-2] == "PASSED"  # the verdict, then the run line
    assert "ERROR" not in result.output


def test_a_misspelled_threshold_is_refused_before_anything_runs(
    suite: Path, agent_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIStub(responder=lambda body: RELEVANT) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        result = _eval(suite, agent_config, "--fail-under", "answer_relevence=0.9")
        assert stub.requests == []  # not even the judge's preflight
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "answer_relevence" in line]
    assert len(lines) == 1, result.output
    assert "did you mean 'answer_relevance'?" in lines[0]
    assert "Valid names: answer_relevance, mrr." in lines[0]
    assert _runs() == 0
