"""Judge agreement with people: score labelled rows with a judge and measure how well it agrees.

Per metric: AUROC of the judge's score for the people's positive label, Cohen's kappa and accuracy
at the decision threshold (the one that maximises kappa, unless thresholds are given), each with a
95% bootstrap interval over rows, all logged to one MLflow run. The chosen thresholds can be
written to a file that judges read (`ragworks eval SUITE --judge-thresholds FILE`).

Kappa at the kappa-maximising threshold is measured on the rows that chose it, so it is optimistic;
pass `thresholds` from another labelled set to measure it out of sample.

Example:
    >>> report = calibrate("labels.jsonl", judge="offline:lexical")  # doctest: +SKIP
    >>> report.metrics["faithfulness"].auroc.value                    # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ragworks.errors import EvalError
from ragworks.eval._agreement_stats import Interval, best_threshold, bootstrap
from ragworks.eval._labels import LabelledRow, load_labels
from ragworks.eval.judges import Judge, get_judge
from ragworks.eval.scorers import JUDGE_SCORERS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricAgreement:
    """How one judged metric agrees with the people's labels."""

    metric: str
    n: int
    positives: int
    auroc: Interval
    kappa: Interval
    accuracy: Interval
    threshold: float
    """The decision threshold kappa and accuracy are measured at (score >= threshold passes)."""
    best_threshold: float
    """The threshold that maximises kappa on these rows."""
    best_kappa: float
    label_cutoff: float | None = None
    """For numeric labels: a label at or above it counts as positive."""
    spearman: float | None = None
    """For numeric labels: rank correlation of the scores with the labels."""

    def to_dict(self) -> dict[str, Any]:  # Any: JSON values
        """The agreement as the flat JSON `--json` prints."""
        out: dict[str, Any] = {"n": self.n, "positives": self.positives}
        for name in ("auroc", "kappa", "accuracy"):
            interval: Interval = getattr(self, name)
            out[name] = _round(interval.value)
            out[f"{name}_ci"] = [_round(interval.low), _round(interval.high)]
        out.update(threshold=self.threshold, best_threshold=self.best_threshold)
        out["best_kappa"] = _round(self.best_kappa)
        if self.label_cutoff is not None:
            out.update(label_cutoff=self.label_cutoff, spearman=_round(self.spearman))
        return out


@dataclass(slots=True, kw_only=True)
class CalibrationReport:
    """What `calibrate` measured, and the MLflow run it logged."""

    labels: str
    judge: str
    metrics: dict[str, MetricAgreement] = field(default_factory=dict)
    run_id: str = ""

    @property
    def thresholds(self) -> dict[str, float]:
        """The decision threshold of each metric."""
        return {name: m.threshold for name, m in self.metrics.items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:  # Any: JSON values
        """`{METRIC: {"auroc", "kappa", "accuracy", "threshold", "n", ...}}`."""
        return {name: m.to_dict() for name, m in self.metrics.items()}

    def summary(self) -> str:
        """An aligned text table, one line per metric."""
        lines = [f"judge {self.judge} vs people's labels in {self.labels}"]
        lines.append(
            f"{'metric':<18} {'n':>5} {'AUROC [95% CI]':>22} {'kappa [95% CI]':>22} "
            f"{'accuracy':>8} {'threshold':>9}"
        )
        for name, m in self.metrics.items():
            lines.append(
                f"{name:<18} {m.n:>5} {_ci(m.auroc):>22} {_ci(m.kappa):>22} "
                f"{m.accuracy.value:>8.3f} {m.threshold:>9}"
            )
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def _ci(interval: Interval) -> str:
    return f"{interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def score_row(judge: Judge, metric: str, row: LabelledRow) -> float:
    """The judge's score of one labelled row on one metric (context relevance: mean over passages)."""
    if metric == "faithfulness":
        return judge.faithfulness(row.question, row.answer, list(row.contexts)).score
    if metric == "answer_relevance":
        return judge.answer_relevance(row.question, row.answer).score
    if metric == "context_relevance":
        scores = [judge.context_relevance(row.question, c).score for c in row.contexts]
        return float(np.mean(scores)) if scores else 0.0
    return judge.correctness(
        row.question,
        row.answer,
        expected_response=row.expected_response,
        expected_facts=list(row.expected_facts) or None,
    ).score


def _binary(values: Sequence[bool | float]) -> tuple[np.ndarray, float | None]:
    """Labels as booleans, and the cut-off used for numeric labels (the middle of their range)."""
    if all(isinstance(v, bool) for v in values) or set(map(float, values)) <= {0.0, 1.0}:
        return np.array([bool(v) for v in values]), None
    numbers = np.array([float(v) for v in values])
    cutoff = float((numbers.min() + numbers.max()) / 2)
    return numbers >= cutoff, round(cutoff, 4)


def agreement(
    metric: str,
    labels: Sequence[bool | float],
    scores: Sequence[float],
    *,
    threshold: float | None = None,
    seed: int = 0,
) -> MetricAgreement:
    """AUROC, kappa and accuracy of scores against labels, at `threshold` or the kappa-maximising one.

    Raises:
        EvalError: the labels hold only one class, so agreement cannot be measured.
    """
    y, cutoff = _binary(labels)
    if y.all() or not y.any():
        raise EvalError(
            f"Labels of {metric!r} are all {'positive' if y.all() else 'negative'} ({y.size} rows): "
            "agreement needs people's labels of both kinds."
        )
    best, best_k = best_threshold(y, scores)
    chosen = best if threshold is None else float(threshold)
    stats = bootstrap(y, scores, chosen, seed=seed)
    spearman = float(spearmanr(labels, scores).statistic) if cutoff is not None else None
    return MetricAgreement(
        metric=metric,
        n=int(y.size),
        positives=int(y.sum()),
        auroc=stats["auroc"],
        kappa=stats["kappa"],
        accuracy=stats["accuracy"],
        threshold=chosen,
        best_threshold=best,
        best_kappa=best_k,
        label_cutoff=cutoff,
        spearman=spearman,
    )


def _metrics_of(rows: Sequence[LabelledRow], scorers: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(m for r in rows for m in r.labels))
    wanted = list(scorers or [m for m in present if m in JUDGE_SCORERS])
    unknown = [m for m in wanted if m not in JUDGE_SCORERS]
    if unknown:
        raise EvalError(
            f"Cannot calibrate {', '.join(map(repr, unknown))}: "
            f"judged metrics are {', '.join(JUDGE_SCORERS)}."
        )
    unlabelled = [m for m in wanted if m not in present]
    if unlabelled or not wanted:
        raise EvalError(
            f"The labels have no {', '.join(map(repr, unlabelled or JUDGE_SCORERS))} labels "
            f"(they label: {', '.join(present) or 'nothing'}); add them or pick --scorer among those."
        )
    return wanted


def _score_all(judge: Judge, metric: str, rows: Sequence[LabelledRow], workers: int) -> list[float]:
    prefetch = getattr(judge, "prefetch", None)
    if callable(prefetch):  # the dense offline judge embeds, in one batch, the texts this metric reads
        texts = {
            "faithfulness": [r.answer for r in rows] + [c for r in rows for c in r.contexts],
            "answer_relevance": [r.question for r in rows] + [r.answer for r in rows],
            "context_relevance": [r.question for r in rows] + [c for r in rows for c in r.contexts],
        }.get(metric, [r.answer for r in rows])
        prefetch(list(dict.fromkeys(texts)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda r: score_row(judge, metric, r), rows))


def calibrate(
    labels: str | Path,
    *,
    judge: str | Judge = "offline",
    scorers: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    experiment: str | None = None,
    concurrency: int = 8,
    seed: int = 0,
) -> CalibrationReport:
    """Score the labelled rows with `judge`, measure agreement per metric, and log it to an MLflow run.

    Args:
        labels: a `.jsonl` or `.csv` file of labelled rows (see `ragworks.eval._labels`).
        judge: a judge name (see `get_judge`) or a Judge.
        scorers: the metrics to calibrate; default: every judged metric the labels have.
        thresholds: decision thresholds to measure at (e.g. from another set); default: kappa-maximising.
        experiment: the MLflow experiment (default: the active one).
        concurrency: rows judged at once.
        seed: the bootstrap's seed.

    Raises:
        EvalError: the labels are malformed, lack a metric, or hold one class only.
    """
    import mlflow

    rows = load_labels(labels)
    metrics = _metrics_of(rows, scorers)
    judge_obj = get_judge(judge, concurrency=concurrency) if isinstance(judge, str) else judge
    prepare = getattr(judge_obj, "prepare", None)
    if callable(prepare):
        prepare()
    report = CalibrationReport(labels=str(labels), judge=judge_obj.name)
    for metric in metrics:
        labelled = [r for r in rows if metric in r.labels]
        scores = _score_all(judge_obj, metric, labelled, concurrency)
        report.metrics[metric] = agreement(
            metric,
            [r.labels[metric] for r in labelled],
            scores,
            threshold=(thresholds or {}).get(metric),
            seed=seed,
        )
    if experiment:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"calibrate {judge_obj.name}") as run:
        _log(report, Path(labels), rows=len(rows), given=bool(thresholds))
        report.run_id = run.info.run_id
    return report


def _log(report: CalibrationReport, labels: Path, *, rows: int, given: bool) -> None:
    import mlflow

    digest = hashlib.sha256(labels.read_bytes()).hexdigest()[:16]
    mlflow.log_params(
        {
            "judge": report.judge,
            "labels": str(labels)[:500],
            "labels_sha256": digest,
            "rows": rows,
            "metrics": ",".join(report.metrics),
            "threshold_source": "given" if given else "max_kappa",
        }
    )
    logged: dict[str, float] = {}
    for name, m in report.metrics.items():
        for key in ("auroc", "kappa", "accuracy"):
            interval: Interval = getattr(m, key)
            logged.update({f"{name}/{key}": interval.value, f"{name}/{key}_ci_low": interval.low})
            logged[f"{name}/{key}_ci_high"] = interval.high
        logged.update({f"{name}/threshold": m.threshold, f"{name}/best_threshold": m.best_threshold})
        logged.update({f"{name}/best_kappa": m.best_kappa, f"{name}/n": float(m.n)})
    mlflow.log_metrics({k: v for k, v in logged.items() if np.isfinite(v)})
    mlflow.set_tags({"ragworks.calibrate.judge": report.judge, "ragworks.calibrate.labels_sha256": digest})
    mlflow.log_text(json.dumps(report.to_dict(), indent=2), "calibration.json")


__all__ = ["CalibrationReport", "MetricAgreement", "agreement", "calibrate", "score_row"]
