"""Runner pieces: bootstrap intervals, thresholds, reports."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ragworks.errors import ConfigError
from ragworks.eval.commands import parse_thresholds
from ragworks.eval.paired import PairedComparison, compare_metric
from ragworks.eval.report import histogram, render
from ragworks.eval.runner import MetricSummary, SuiteResult, bootstrap_ci


def test_bootstrap_interval_contains_the_mean_and_is_deterministic() -> None:
    values = [0.0, 1.0] * 20
    low, high = bootstrap_ci(values)
    assert low < 0.5 < high and high - low < 0.4
    assert bootstrap_ci(values) == (low, high)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_parse_thresholds() -> None:
    assert parse_thresholds(["faithfulness=0.8", "mrr = 0.5"]) == {"faithfulness": 0.8, "mrr": 0.5}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_thresholds(["faithfulness"])
    with pytest.raises(ConfigError):
        parse_thresholds(["faithfulness=high"])


def _result(**kwargs: object) -> SuiteResult:
    metric = MetricSummary(name="faithfulness", mean=0.5, ci_low=0.3, ci_high=0.7, n=4, errors=1)
    table = pd.DataFrame({"question": ["q<b>"], "faithfulness": [0.5]})
    return SuiteResult(
        run_id="r1",
        suite="s",
        metrics={"faithfulness": metric},
        values={"faithfulness": [0, 0.5, 1, 0.5]},
        table=table,
        judge="offline:lexical",
        **kwargs,
    )  # type: ignore[arg-type]


def test_reports_and_summary() -> None:
    assert histogram([0.0, 0.05, 0.5, 1.0]) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    passing = _result()
    assert passing.passed and passing.summary().endswith("PASSED")
    failing = _result(
        failures=["faithfulness: mean 0.500 < 0.8"],
        comparison=PairedComparison(
            baseline="r0",
            current="r1",
            metrics=[compare_metric("faithfulness", [0.9] * 8, [0.5] * 8)],
            paired=8,
        ),
    )
    assert not failing.passed
    text = failing.summary()
    assert "FAIL faithfulness" in text and "REGRESSION faithfulness" in text and text.endswith("FAILED")
    page = render(failing)
    assert page.count("<svg") == 1 and "q&lt;b&gt;" in page and "FAILED" in page
    assert "| faithfulness | 0.500 | [0.300, 0.700] | 4 | 1 |" in render(failing, fmt="md")
