"""Paired comparison of two suite runs: the same rows, scored twice, compared row by row.

Rows are paired by a key of their inputs (`row_keys`), so a reordered suite still pairs and rows
only one run has are left out (and counted). Per metric: the mean difference (current - baseline)
with a paired bootstrap interval, and a paired test: McNemar's exact test when every value is 0 or 1
(pass / fail), else the Wilcoxon signed-rank test. A metric whose test is significant at `alpha`
regressed (mean difference below 0) or improved (above 0); only a regression fails the gate.

Example:
    >>> import pandas as pd
    >>> base = pd.DataFrame({"row_key": ["a", "b"], "mrr": [1.0, 0.5]})
    >>> comparison = compare_tables(base, base, ["mrr"], baseline="r1", current="r1")
    >>> comparison.metrics[0].mean_diff, comparison.regressions
    (0.0, [])
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from ragworks.errors import EvalError
from ragworks.eval._stats import as_float, bootstrap_ci

if TYPE_CHECKING:
    import pandas as pd

ALPHA = 0.05
"""Significance level of the paired tests (two-sided), per metric."""
RESULTS_ARTIFACT = "eval_results.json"
KEY_COLUMN = "row_key"
DECIMALS = 9
"""Values are compared at this many decimals: a results table read back from its JSON artifact
keeps 10 (pandas' `to_json`), so a run compared with a fresh copy of itself must not differ."""
Verdict = Literal["regression", "improvement", "no change"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedMetric:
    """One metric compared over the rows both runs scored."""

    metric: str
    n: int
    """Rows paired (scored in both runs)."""
    baseline: float
    current: float
    mean_diff: float
    """Mean of current - baseline over the paired rows."""
    ci_low: float
    ci_high: float
    """The 95% paired bootstrap interval of `mean_diff`."""
    test: str
    """`mcnemar` (exact, for 0 / 1 values), `wilcoxon` (signed-rank), or `none` (no row differs)."""
    p_value: float
    worse: int
    """Rows whose value dropped."""
    better: int
    """Rows whose value rose."""
    alpha: float = ALPHA

    @property
    def verdict(self) -> Verdict:
        """`regression` or `improvement` when the test is significant at `alpha`, else `no change`."""
        if self.p_value >= self.alpha or self.mean_diff == 0:
            return "no change"
        return "regression" if self.mean_diff < 0 else "improvement"


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedComparison:
    """Every shared metric of two runs compared row by row."""

    baseline: str
    current: str
    metrics: list[PairedMetric]
    paired: int
    """Rows found in both runs."""
    only_baseline: int = 0
    only_current: int = 0
    skipped: list[str] = field(default_factory=list)
    """Metrics of the current run the baseline has no values for."""

    @property
    def regressions(self) -> list[PairedMetric]:
        """The metrics that got significantly worse."""
        return [m for m in self.metrics if m.verdict == "regression"]

    @property
    def improvements(self) -> list[PairedMetric]:
        """The metrics that got significantly better."""
        return [m for m in self.metrics if m.verdict == "improvement"]

    def lines(self) -> list[str]:
        """The comparison as text lines: a table, then the regressions (or 'no regressions')."""
        alpha = self.metrics[0].alpha if self.metrics else ALPHA
        width = max([len("metric"), *(len(m.metric) for m in self.metrics)])
        out = [
            f"paired comparison with baseline run {self.baseline}: {self.paired} rows paired"
            + _unpaired(self),
            f"{'metric':<{width}}  {'base':>6}  {'now':>6}  {'diff':>7}  {'95% CI of diff':>17}  "
            f"{'test':>8}  {'p':>6}  verdict",
        ]
        for m in self.metrics:
            ci = f"[{m.ci_low:+.3f}, {m.ci_high:+.3f}]"
            out.append(
                f"{m.metric:<{width}}  {m.baseline:>6.3f}  {m.current:>6.3f}  {m.mean_diff:>+7.3f}  "
                f"{ci:>17}  {m.test:>8}  {m.p_value:>6.3f}  {m.verdict}"
            )
        out.extend(f"metric {name}: not in the baseline run, not compared" for name in self.skipped)
        out.extend(
            f"REGRESSION {m.metric}: {m.baseline:.3f} -> {m.current:.3f} "
            f"(diff {m.mean_diff:+.3f}, {m.test} p={m.p_value:.3g} < {alpha}; {m.worse} rows worse)"
            for m in self.regressions
        )
        out.extend(
            f"improvement {m.metric}: {m.baseline:.3f} -> {m.current:.3f} ({m.test} p={m.p_value:.3g})"
            for m in self.improvements
        )
        if not self.regressions:
            out.append(f"no regressions (no metric is significantly worse at alpha={alpha})")
        return out


def _unpaired(comparison: PairedComparison) -> str:
    parts = []
    if comparison.only_baseline:
        parts.append(f"{comparison.only_baseline} only in the baseline")
    if comparison.only_current:
        parts.append(f"{comparison.only_current} only in this run")
    return f" ({', '.join(parts)}, left out)" if parts else ""


def row_keys(requests: Sequence[object]) -> list[str]:
    """A stable key per row from its inputs; the n-th repeat of the same inputs gets `#n`."""
    seen: Counter[str] = Counter()
    keys = []
    for request in requests:
        blob = json.dumps(request, sort_keys=True, ensure_ascii=False, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
        keys.append(f"{digest}#{seen[digest]}" if seen[digest] else digest)
        seen[digest] += 1
    return keys


def paired_test(baseline: Sequence[float], current: Sequence[float]) -> tuple[str, float]:
    """McNemar's exact test when all values are 0 / 1, else Wilcoxon signed-rank; (name, p value)."""
    from scipy import stats

    base, now = np.asarray(baseline, dtype=float), np.asarray(current, dtype=float)
    diffs = now - base
    if not np.any(diffs):
        return "none", 1.0
    if np.all(np.isin(base, (0.0, 1.0))) and np.all(np.isin(now, (0.0, 1.0))):
        worse, better = int(np.sum(diffs < 0)), int(np.sum(diffs > 0))
        return "mcnemar", float(stats.binomtest(min(worse, better), worse + better, 0.5).pvalue)
    # zsplit keeps the unchanged rows in the ranking, so many ties do not overstate the evidence
    return "wilcoxon", float(stats.wilcoxon(diffs, zero_method="zsplit").pvalue)


def compare_metric(
    name: str, baseline: Sequence[float], current: Sequence[float], *, alpha: float = ALPHA
) -> PairedMetric:
    """One metric over paired values (same length, same row order)."""
    base = np.round(np.asarray(baseline, dtype=float), DECIMALS)
    now = np.round(np.asarray(current, dtype=float), DECIMALS)
    diffs = now - base
    low, high = bootstrap_ci(diffs.tolist())  # resampling the rows' differences: a paired bootstrap
    test, p_value = paired_test(base.tolist(), now.tolist())
    return PairedMetric(
        metric=name,
        n=int(diffs.size),
        baseline=float(base.mean()),
        current=float(now.mean()),
        mean_diff=float(diffs.mean()),
        ci_low=low,
        ci_high=high,
        test=test,
        p_value=p_value,
        worse=int(np.sum(diffs < 0)),
        better=int(np.sum(diffs > 0)),
        alpha=alpha,
    )


def compare_tables(
    baseline_table: pd.DataFrame,
    current_table: pd.DataFrame,
    metrics: Sequence[str],
    *,
    baseline: str = "",
    current: str = "",
    alpha: float = ALPHA,
) -> PairedComparison:
    """Compare two results tables (one row per suite row, a column per metric) row by row.

    Args:
        baseline_table: the baseline run's table; current_table: the run compared with it.
        metrics: the metric columns to compare; those the baseline lacks are listed as skipped.
        baseline: the baseline's run id; current: this run's id (labels of the report).
        alpha: significance level of each metric's paired test.

    Raises:
        EvalError: the tables share no row (different suites).
    """
    base_rows, now_rows = _by_key(baseline_table), _by_key(current_table)
    shared = [k for k in now_rows if k in base_rows]
    if not shared:
        raise EvalError(
            f"Run {current or '(current)'} shares no suite row with baseline run {baseline or '?'}: "
            "compare runs of the same suite (rows are paired by their inputs)."
        )
    compared, skipped = [], []
    for name in metrics:
        if name not in baseline_table.columns:
            skipped.append(name)
            continue
        pairs = [
            (b, c)
            for key in shared
            if (b := as_float(base_rows[key].get(name))) is not None
            and (c := as_float(now_rows[key].get(name))) is not None
        ]
        if pairs:
            compared.append(compare_metric(name, [b for b, _ in pairs], [c for _, c in pairs], alpha=alpha))
    return PairedComparison(
        baseline=baseline,
        current=current,
        metrics=compared,
        paired=len(shared),
        only_baseline=len(set(base_rows) - set(shared)),
        only_current=len(now_rows) - len(shared),
        skipped=skipped,
    )


def check_shared_questions(baseline_table: pd.DataFrame, questions: Sequence[str], *, baseline: str) -> None:
    """Refuse, before any row runs, a baseline whose rows ask none of the suite's questions.

    Raises:
        EvalError: no question of the baseline's results table is one of `questions`.
    """
    if "question" not in baseline_table.columns or not questions:
        return
    asked = {str(q) for q in baseline_table["question"]}
    if asked and not asked & set(questions):
        raise EvalError(
            f"Baseline run {baseline} asked none of this suite's questions: pass a run of the same suite "
            "(rows are paired by their inputs)."
        )


def _by_key(table: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Rows by key: `row_key`, else (tables logged before it existed) the question's text."""
    records = table.to_dict(orient="records")
    if KEY_COLUMN in table.columns:
        keys = [str(r[KEY_COLUMN]) for r in records]
    else:
        keys = row_keys([r.get("question") for r in records])
    return dict(zip(keys, records, strict=True))


def load_results(run_id: str) -> pd.DataFrame:
    """The per-row results table a suite run logged (`eval_results.json`).

    Raises:
        EvalError: the run does not exist or logged no results table (not a `ragworks eval` run).
    """
    import mlflow

    try:
        mlflow.get_run(run_id)
    except Exception as exc:
        raise EvalError(f"Cannot read run {run_id!r}: {exc}") from exc
    try:
        table = mlflow.load_table(RESULTS_ARTIFACT, run_ids=[run_id])
    except Exception as exc:
        raise EvalError(
            f"Run {run_id!r} has no {RESULTS_ARTIFACT} to pair rows with: "
            "pass the id of a `ragworks eval` run."
        ) from exc
    return table.drop(columns=["run_id"], errors="ignore")


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a results table: those with a `<name>/rationale` companion."""
    return [c for c in table.columns if f"{c}/rationale" in table.columns]


def compare_runs(baseline_run_id: str, current_run_id: str, *, alpha: float = ALPHA) -> PairedComparison:
    """Compare two logged suite runs row by row (see `compare_tables`).

    Raises:
        EvalError: a run cannot be read, has no results table, or the runs share no row.
    """
    baseline, current = load_results(baseline_run_id), load_results(current_run_id)
    return compare_tables(
        baseline,
        current,
        metric_columns(current),
        baseline=baseline_run_id,
        current=current_run_id,
        alpha=alpha,
    )


def comparison_metrics(comparison: PairedComparison) -> dict[str, float]:
    """The comparison as MLflow metrics: `<name>/diff`, its interval and p value, per metric."""
    logged: dict[str, float] = {"baseline/paired_rows": float(comparison.paired)}
    for m in comparison.metrics:
        logged[f"{m.metric}/diff"] = m.mean_diff
        logged[f"{m.metric}/diff_ci_low"] = m.ci_low
        logged[f"{m.metric}/diff_ci_high"] = m.ci_high
        logged[f"{m.metric}/diff_p_value"] = m.p_value
    logged["baseline/regressions"] = float(len(comparison.regressions))
    logged["baseline/improvements"] = float(len(comparison.improvements))
    return {k: v for k, v in logged.items() if not math.isnan(v)}


__all__ = [
    "ALPHA",
    "PairedComparison",
    "PairedMetric",
    "check_shared_questions",
    "compare_metric",
    "compare_runs",
    "compare_tables",
    "comparison_metrics",
    "load_results",
    "paired_test",
    "row_keys",
]
