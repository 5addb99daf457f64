"""Reports say how far to trust each judged metric, from the shipped agreement with people."""

from __future__ import annotations

import pandas as pd
import pytest

from ragworks.eval._stats import MetricSummary
from ragworks.eval.agreement import agreement_of, shipped_agreement, trust_note
from ragworks.eval.report import render_html, render_markdown, summary_table
from ragworks.eval.runner import SuiteResult


def _result(judge: str) -> SuiteResult:
    metrics = {
        name: MetricSummary(name=name, mean=0.8, ci_low=0.7, ci_high=0.9, n=10)
        for name in ("faithfulness", "answer_relevance", "recall_at_k")
    }
    return SuiteResult(run_id="r1", suite="s", metrics=metrics, values={}, table=pd.DataFrame(), judge=judge)


def test_shipped_agreement_covers_both_offline_judges_on_the_public_sets() -> None:
    entries = shipped_agreement()
    assert {(a.judge, a.metric) for a in entries} >= {
        ("offline:lexical", "faithfulness"),
        ("offline:lexical", "answer_relevance"),
    }
    for a in entries:
        assert 0.5 < a.auroc <= 1.0 and a.auroc_ci[0] <= a.auroc <= a.auroc_ci[1] and a.n > 100


def test_summary_markdown_and_html_say_how_far_to_trust_each_judged_metric() -> None:
    begin = agreement_of("offline:lexical", "faithfulness")[0]
    expected = f"how far to trust faithfulness: agreement with people: AUROC {begin.auroc:.2f}"
    result = _result("offline:lexical")
    for text in (summary_table(result), render_markdown(result), render_html(result)):
        assert expected in text and "on BEGIN dev" in text
        assert "how far to trust answer_relevance" in text
        assert "how far to trust recall_at_k" not in text  # retrieval metrics are not judged


@pytest.mark.parametrize("judge", ["openai:gpt-4o-mini"])
def test_an_unmeasured_judge_says_so_and_how_to_measure_it(judge: str) -> None:
    note = trust_note(judge, "faithfulness")
    assert "not measured" in note and f"ragworks eval calibrate LABELS --judge {judge}" in note
    assert note in summary_table(_result(judge))
