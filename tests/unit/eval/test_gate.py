"""The gate: threshold names checked first, thresholds, and metrics in error that fail the run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ragworks.errors import ConfigError
from ragworks.eval._gate import check_threshold_names, judged_errors, threshold_failures
from ragworks.eval._stats import MetricSummary, summarise
from ragworks.eval.report import render_markdown, summary_table
from ragworks.eval.runner import SuiteResult

NAMES = ["answer_relevance", "faithfulness", "mrr"]


def _summary(name: str, *, n: int, errors: int = 0, mean: float = 1.0, first: str = "") -> MetricSummary:
    return MetricSummary(
        name=name, mean=mean, ci_low=mean, ci_high=mean, n=n, errors=errors, first_error=first
    )


def test_known_threshold_names_pass_and_unknown_ones_list_the_valid_names() -> None:
    check_threshold_names({"faithfulness": 0.8, "mrr": 0.5}, NAMES)
    check_threshold_names(None, NAMES)
    check_threshold_names({"mrr/mean": 0.5}, NAMES)  # a part of a scorer's feedback
    with pytest.raises(ConfigError) as caught:
        check_threshold_names({"faithfulnes": 0.8, "zzz": 1.0}, NAMES)
    message = str(caught.value)
    assert "'faithfulnes' (did you mean 'faithfulness'?)" in message and "'zzz'" in message
    assert message.endswith("Valid names: answer_relevance, faithfulness, mrr.")
    assert "\n" not in message


def test_a_metric_with_errors_or_nothing_scored_is_reported_with_its_first_error() -> None:
    metrics = {
        "faithfulness": _summary("faithfulness", n=3, errors=1, first="EvalError: judge\n  down"),
        "answer_relevance": _summary("answer_relevance", n=0, errors=4, mean=float("nan"), first="boom"),
        "mrr": _summary("mrr", n=4),
    }
    problems = judged_errors(metrics, [*NAMES, "correctness"])  # correctness: nothing to judge, absent
    assert problems == [
        "answer_relevance: 4 of 4 rows errored, no row was scored (n=0); first error: boom",
        "faithfulness: 1 of 4 rows errored; first error: EvalError: judge down",
    ]
    long = {"mrr": _summary("mrr", n=0, errors=1, first="x" * 1000)}
    assert len(judged_errors(long, ["mrr"])[0]) < 400


def test_thresholds_fail_below_the_minimum_and_when_no_value_was_computed() -> None:
    metrics = {"mrr": _summary("mrr", n=2, mean=0.4), "faithfulness": _summary("faithfulness", n=0)}
    assert threshold_failures(metrics, {"mrr": 0.5, "faithfulness": 0.1, "answer_relevance": 0.1}) == [
        "mrr: mean 0.400 < 0.5",
        "faithfulness: no value was computed (threshold 0.1)",
        "answer_relevance: no value was computed (threshold 0.1)",
    ]
    assert threshold_failures(metrics, {"mrr": 0.4}) == []


def test_summarise_counts_errors_and_keeps_the_first_message() -> None:
    frame = pd.DataFrame(
        {
            "faithfulness/value": [None, 1.0, None],
            "faithfulness/error_message": ["first broke", None, "second broke"],
            "mrr/value": [1.0, 0.5, 0.0],
        }
    )
    out = summarise(frame, ["faithfulness", "mrr", "correctness"])
    faith = out.metrics["faithfulness"]
    assert (faith.n, faith.errors, faith.first_error, faith.mean) == (1, 2, "first broke", 1.0)
    assert out.metrics["mrr"].mean == 0.5 and "correctness" not in out.metrics
    errors = [e if isinstance(e, str) else None for e in out.columns["faithfulness/error"]]
    assert errors == ["first broke", None, "second broke"]


def _result(errors: list[str], *, allow: bool) -> SuiteResult:
    metrics = {"faithfulness": _summary("faithfulness", n=0, errors=2, mean=float("nan"))}
    return SuiteResult(
        run_id="r",
        suite="s",
        metrics=metrics,
        values={},
        table=pd.DataFrame(),
        errors=errors,
        allow_errors=allow,
    )


def test_a_run_with_errors_fails_and_never_reads_passed_unless_errors_are_allowed() -> None:
    refused = _result(["faithfulness: 2 of 2 rows errored"], allow=False)
    assert not refused.passed
    text = summary_table(refused)
    assert "ERROR faithfulness: 2 of 2 rows errored" in text and text.endswith("FAILED")
    assert "PASSED" not in text and "PASSED" not in render_markdown(refused)
    allowed = _result(["faithfulness: 2 of 2 rows errored"], allow=True)
    assert allowed.passed
    tail = "ALLOWED ERROR faithfulness: 2 of 2 rows errored\nPASSED (errors allowed)"
    assert summary_table(allowed).endswith(tail)
    assert _result([], allow=False).passed


def test_rows_whose_prediction_failed_are_one_line_naming_the_first_trace() -> None:
    from ragworks.eval._gate import failed_predictions

    assert failed_predictions(["tr-1", "tr-2"], ["OK", "OK"]) == []
    assert failed_predictions(["tr-1", "tr-2", "tr-3"], ["OK", "ERROR", "ERROR"]) == [
        "predictions: the agent failed on 2 of 3 rows (first: trace tr-2)"
    ]


@pytest.mark.parametrize("ratio", ["0", "0.5"])
def test_a_sampling_ratio_below_one_is_refused_before_anything_runs(
    ratio: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without it, mlflow.genai.evaluate fails deep inside on a trace that was never kept."""
    from ragworks.eval import run_suite

    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", ratio)
    suite = tmp_path / "suite.yaml"
    suite.write_text("rows:\n  - inputs: {question: What is ragworks?}\n")
    with pytest.raises(ConfigError, match=f"MLFLOW_TRACE_SAMPLING_RATIO={float(ratio)} drops traces"):
        run_suite(lambda request: {"output": []}, suite)
