"""The driver-side parts of `eval --spark` that need no Spark: partitions, targets, the tracing check."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from ragworks.errors import ConfigError
from ragworks.scale import _trace_check
from ragworks.scale.spark_eval import executor_target, partition_groups


def test_the_tracing_check_and_trace_capture_hooks_are_present() -> None:
    from ragworks.trace_export import _mlflow_hooks

    # On a supported MLflow neither fallback engages (each would log once and change how rows are traced).
    assert _trace_check.MISSING == ()
    assert _mlflow_hooks.MISSING == ()


def test_traces_itself_tells_a_traced_function_from_a_plain_one(tracing_off: None) -> None:
    @mlflow.trace
    def traced(question: str) -> str:
        return question

    def plain(question: str) -> str:
        return question

    assert _trace_check.traces_itself(traced, {"question": "q"}) is True
    assert _trace_check.traces_itself(plain, {"question": "q"}) is False


def test_traces_itself_fails_as_the_local_run_does_on_a_failing_first_row(tracing_off: None) -> None:
    def broken(question: str) -> str:
        raise RuntimeError("no answer")

    with pytest.raises(Exception, match="no answer"):
        _trace_check.traces_itself(broken, {"question": "q"})


def test_partition_groups_keep_a_conversation_together_in_turn_order() -> None:
    def turn(conversation: str, number: int) -> dict[str, object]:
        return {"inputs": {"question": "q", "conversation_id": conversation, "turn": number}}

    records = [turn("a", 2), {"inputs": {"question": "single"}}, turn("b", 1), turn("a", 1), turn("b", 2)]
    assert partition_groups(records) == [[3, 0], [1], [2, 4]]


def test_executor_target_is_a_config_with_absolute_paths_or_a_model_uri(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("retriever:\n  type: local\n  index: idx\n", encoding="utf-8")
    spec = executor_target(str(config))
    assert isinstance(spec, dict) and spec["retriever"]["index"] == str((tmp_path / "idx").resolve())
    assert executor_target("models:/agent/1") == "models:/agent/1"
    with pytest.raises(ConfigError, match=r"--config agent\.yaml or --model-uri"):
        executor_target(lambda request: request)


def test_a_failed_row_without_an_error_trace_still_fails_the_gate() -> None:
    from ragworks.scale.spark_eval import SparkEval

    spark_eval = SparkEval(session=None, target={}, k=3)  # type: ignore[arg-type]  # no job runs here
    assert spark_eval.prediction_errors([], rows=4) == []
    # A failed row whose trace was lost gets an OK minimal trace from evaluate: the executors' error counts.
    spark_eval.failed = ["RetrievalError: the index is gone"]
    (line,) = spark_eval.prediction_errors([], rows=4)
    assert line.startswith("predictions: the agent failed on 1 of 4 rows") and "index is gone" in line
    from_traces = ["predictions: the agent failed on 1 of 4 rows (first: trace tr-1)"]
    assert spark_eval.prediction_errors(from_traces, rows=4) == from_traces


def test_spark_is_refused_in_one_line_on_an_mlflow_without_the_eval_internals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ragworks.eval import _prefetch
    from ragworks.scale.spark_eval import prepare

    assert _prefetch.ESSENTIAL_MISSING == ()  # on every supported MLflow
    monkeypatch.setattr(_prefetch, "ESSENTIAL_MISSING", ("mlflow.x.configure_autologging_for_evaluation",))
    with pytest.raises(ConfigError, match="--spark needs MLflow's evaluation internals"):
        prepare("agent.yaml", master="local[1]", k=3)
