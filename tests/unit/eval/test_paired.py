"""Paired comparison: rows paired by their inputs, McNemar for 0/1 values, Wilcoxon for scores."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from ragworks.errors import EvalError
from ragworks.eval.paired import compare_metric, compare_tables, paired_test, row_keys


def _table(keys: list[str], **metrics: list[float | None]) -> pd.DataFrame:
    frame = pd.DataFrame({"row_key": keys, **metrics})
    for name in metrics:
        frame[f"{name}/rationale"] = ""
    return frame


def test_mcnemar_exact_counts_only_the_rows_that_changed() -> None:
    # 8 rows passed before and fail now, 12 are unchanged: two-sided exact p = 2 * 0.5**8
    base, now = [1.0] * 20, [0.0] * 8 + [1.0] * 12
    assert paired_test(base, now) == ("mcnemar", pytest.approx(2 * 0.5**8))
    # 4 worse, 4 better: no evidence either way
    assert paired_test([1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4)[1] == pytest.approx(1.0)
    assert paired_test([1.0, 0.0], [1.0, 0.0]) == ("none", 1.0)


def test_wilcoxon_for_scores_and_the_verdicts() -> None:
    base = [0.9, 0.8, 0.85, 0.7, 0.95, 0.9, 0.8, 0.75, 0.9, 0.6]
    worse = compare_metric("faithfulness", base, [b - 0.2 - 0.01 * i for i, b in enumerate(base)])
    assert worse.test == "wilcoxon" and worse.p_value < 0.01 and worse.verdict == "regression"
    assert worse.worse == 10 and worse.mean_diff == pytest.approx(-0.245)
    assert worse.ci_low <= worse.mean_diff <= worse.ci_high < 0
    better = compare_metric("faithfulness", [b - 0.2 - 0.01 * i for i, b in enumerate(base)], base)
    assert better.verdict == "improvement" and better.mean_diff == pytest.approx(0.245)
    # one row worse by a lot is not significant with ten rows
    noisy = compare_metric("faithfulness", base, [base[0] - 0.5, *base[1:]])
    assert noisy.mean_diff < 0 and noisy.p_value >= 0.05 and noisy.verdict == "no change"


def test_tables_pair_by_key_in_any_order_and_count_the_unpaired() -> None:
    base = _table(["a", "b", "c", "d"], recall_at_k=[1.0, 1.0, 1.0, 0.0], mrr=[1.0, 0.5, 1.0, 1.0])
    now = _table(["d", "c", "b", "e"], recall_at_k=[0.0, 1.0, 1.0, 1.0], mrr=[1.0, 1.0, 0.5, None])
    comparison = compare_tables(base, now, ["recall_at_k", "mrr"], baseline="r0", current="r1")
    assert comparison.paired == 3 and comparison.only_baseline == 1 and comparison.only_current == 1
    by_name = {m.metric: m for m in comparison.metrics}
    assert by_name["recall_at_k"].mean_diff == 0.0 and by_name["recall_at_k"].n == 3  # same rows, reordered
    assert by_name["mrr"].n == 3 and by_name["mrr"].test == "none"
    text = "\n".join(comparison.lines())
    assert "3 rows paired (1 only in the baseline, 1 only in this run, left out)" in text
    assert text.endswith("no regressions (no metric is significantly worse at alpha=0.05)")


def test_a_significant_drop_is_a_regression_and_named() -> None:
    keys = [str(i) for i in range(10)]
    base = _table(keys, recall_at_k=[1.0] * 10, mrr=[1.0] * 10)
    now = _table(keys, recall_at_k=[0.5] * 9 + [1.0], mrr=[1.0] * 10)
    comparison = compare_tables(base, now, ["recall_at_k", "mrr", "faithfulness"], baseline="r0")
    assert [m.metric for m in comparison.regressions] == ["recall_at_k"]
    assert comparison.skipped == ["faithfulness"]
    text = "\n".join(comparison.lines())
    assert "REGRESSION recall_at_k: 1.000 -> 0.550" in text and "no regressions" not in text


def test_tables_without_a_shared_row_are_refused() -> None:
    with pytest.raises(EvalError, match="shares no suite row"):
        compare_tables(_table(["a"], mrr=[1.0]), _table(["b"], mrr=[1.0]), ["mrr"])


def test_row_keys_are_stable_and_tell_repeated_inputs_apart() -> None:
    requests = [{"q": "a", "x": 1}, {"x": 1, "q": "a"}, {"q": "b"}]
    keys = row_keys(requests)
    assert keys[0] != keys[1] and keys[1] == keys[0] + "#1" and keys[2] != keys[0]
    assert row_keys(requests) == keys


def test_tables_logged_before_row_keys_pair_by_question() -> None:
    old = pd.DataFrame({"question": ["q1", "q2"], "mrr": [1.0, 0.5], "mrr/rationale": ["", ""]})
    comparison = compare_tables(old, old.iloc[::-1].reset_index(drop=True), ["mrr"])
    assert comparison.paired == 2 and comparison.metrics[0].mean_diff == 0.0
    assert not math.isnan(comparison.metrics[0].p_value)


def test_values_read_back_from_the_json_artifact_equal_the_fresh_ones() -> None:
    fresh = [0.6131471927654584, 0.6000000000000001, 0.9197207891481876] * 4
    logged = pd.DataFrame({"v": fresh}).to_json(orient="split")  # as mlflow.log_table writes it
    read = list(pd.read_json(io.StringIO(logged), orient="split")["v"])
    assert read != fresh  # the artifact keeps 10 decimals
    same = compare_metric("ndcg_at_k", read, fresh)
    assert same.mean_diff == 0.0 and same.test == "none" and same.verdict == "no change"
