"""The fast path's MLflow internals: present on the installed MLflow, scoped, and never os.environ."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.genai.evaluation import harness

import ragworks.eval
from ragworks.eval import _prefetch
from ragworks.eval.runner import run_suite
from ragworks.eval.suite import EvalSuite


def test_the_fast_path_is_available_on_the_installed_mlflow() -> None:
    assert _prefetch.AVAILABLE, f"MLflow {mlflow.__version__} lacks {_prefetch.MISSING}"


def test_a_run_takes_the_fast_path_and_never_logs_the_fallback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[str] = []
    real = _prefetch.evaluate

    def spy(*args: Any, **kwargs: Any) -> Any:
        called.append("fast")
        return real(*args, **kwargs)

    monkeypatch.setattr(_prefetch, "evaluate", spy)
    caplog.set_level(logging.INFO, logger="ragworks.eval")
    mlflow.set_experiment("prefetch-hooks")
    suite = EvalSuite.model_validate({"name": "hooks", "rows": [{"inputs": "What is alpha?"}]})
    result = run_suite(
        lambda request: {"output": []}, suite, scorers=["answer_relevance"], judge="offline:lexical"
    )
    assert called == ["fast"]
    assert "fast path" not in caplog.text  # neither off nor partly off
    assert result.metrics["answer_relevance"].n == 1


def test_the_fallback_says_so_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_prefetch, "_fallback_logged", threading.Event())
    monkeypatch.setattr(_prefetch, "MISSING", ["mlflow.genai.utils.trace_utils.convert_predict_fn"])
    monkeypatch.setattr(_prefetch, "AVAILABLE", False)
    caplog.set_level(logging.WARNING, logger="ragworks.eval._prefetch")
    _prefetch.log_fallback_once()
    _prefetch.log_fallback_once()
    lines = [r.getMessage() for r in caplog.records if "fast path is off" in r.getMessage()]
    assert len(lines) == 1 and "convert_predict_fn" in lines[0]


def test_a_missing_hook_drops_only_that_hook_and_says_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(harness, "_get_scorer_rate_config")
    monkeypatch.setattr(_prefetch, "MISSING", ["harness._get_scorer_rate_config"])
    monkeypatch.setattr(_prefetch, "_fallback_logged", threading.Event())
    caplog.set_level(logging.WARNING, logger="ragworks.eval._prefetch")
    original_refresh = harness._refresh_eval_result_traces
    with _prefetch.tuned_harness(unthrottled=True):
        assert harness._refresh_eval_result_traces is not original_refresh
        assert not hasattr(harness, "_get_scorer_rate_config")
    assert harness._refresh_eval_result_traces is original_refresh
    assert "runs without MLflow's harness._get_scorer_rate_config" in caplog.text


def test_tuned_harness_lifts_the_scorer_rate_limit_only_when_asked_and_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT", raising=False)
    original_rate, original_refresh = harness._get_scorer_rate_config, harness._refresh_eval_result_traces
    assert original_rate(10.0, True, 1) == (10.0, True)  # MLflow's default: 10 calls/s, adaptive
    with _prefetch.tuned_harness(unthrottled=True):
        assert harness._get_scorer_rate_config(10.0, True, 1) == (None, False)
        assert harness._refresh_eval_result_traces is not original_refresh
    assert harness._get_scorer_rate_config is original_rate
    assert harness._refresh_eval_result_traces is original_refresh
    with _prefetch.tuned_harness(unthrottled=False):
        assert harness._get_scorer_rate_config is original_rate
    monkeypatch.setenv("MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT", "5")  # the user's setting wins
    with _prefetch.tuned_harness(unthrottled=True):
        assert harness._get_scorer_rate_config(10.0, True, 1) == (5.0, False)


def test_eval_code_never_touches_os_environ() -> None:
    folder = Path(ragworks.eval.__file__).parent
    offenders = [
        p.name for p in folder.glob("*.py") if any(s in p.read_text() for s in ("os.environ", "putenv"))
    ]
    assert offenders == []
