"""What a suite run leaves in its MLflow run: metrics, params, verdict tags, the results table, the report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragworks.eval.runner import SuiteResult


def log_result(
    result: SuiteResult,
    *,
    rows: int,
    scorer_names: Sequence[str],
    k: int,
    fail_under: Mapping[str, float] | None,
    report_format: str,
) -> None:
    """Log `result` into the active MLflow run and set `result.report` to the report's artifact path."""
    import mlflow

    from ragworks.eval.paired import comparison_metrics
    from ragworks.eval.repeats import repeat_metrics
    from ragworks.eval.report import render

    mlflow.log_metrics(_metrics(result, rows))
    if result.comparison is not None:
        mlflow.log_metrics(comparison_metrics(result.comparison))
        mlflow.set_tags(
            {
                "ragworks.eval.baseline": result.comparison.baseline,
                "ragworks.eval.regressions": ",".join(m.metric for m in result.regressions),
            }
        )
    if result.conversations is not None:  # evaluate logs `/mean` only for its own scorers
        mlflow.log_metrics(result.conversations.mlflow_metrics())
    if result.repeats:
        mlflow.log_metrics({"eval/repeats": float(_repeats(result)), **repeat_metrics(result.repeats)})
    mlflow.log_params(
        {"suite": result.suite, "judge": result.judge, "k": k, "scorers": ",".join(scorer_names)[:500]}
    )
    mlflow.set_tags(
        {
            "ragworks.eval.suite": result.suite,
            "ragworks.eval.passed": str(result.passed).lower(),
            "ragworks.eval.judge_errors": str(bool(result.errors)).lower(),
            "ragworks.eval.fail_under": ",".join(f"{n}={v}" for n, v in (fail_under or {}).items()),
        }
    )
    mlflow.log_table(data=result.table, artifact_file="eval_results.json")
    result.report = "eval_report.md" if report_format == "md" else "eval_report.html"
    mlflow.log_text(render(result, fmt=report_format), result.report)


def _repeats(result: SuiteResult) -> int:
    return max(s.repeats for s in result.repeats.values())


def _metrics(result: SuiteResult, rows: int) -> dict[str, float]:
    # MLflow's evaluate logs each `<name>/mean`; the interval, counts and judge counters are ours.
    logged: dict[str, float] = {"eval/rows": float(rows), "eval/elapsed_s": result.elapsed_s}
    for name, m in result.metrics.items():
        logged[f"{name}/ci_low"] = m.ci_low
        logged[f"{name}/ci_high"] = m.ci_high
        logged[f"{name}/n"] = float(m.n)
        logged[f"{name}/errors"] = float(m.errors)
    for key, value in result.judge_stats.items():
        logged[f"judge/{key}"] = float(value)
    return {key: value for key, value in logged.items() if not math.isnan(value)}
