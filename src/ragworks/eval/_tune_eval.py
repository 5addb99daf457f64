"""Scoring one config on part of a suite for `ragworks tune`, as a run nested under the study's run.

A scored config is one MLflow run (a trial, the starting config, or a held-back check) whose
parent is the study's run. It holds the config's searched values as params and each metric's mean
with a 95% bootstrap interval, plus the answer latency (median and p95 of the traces' durations).
The rows are scored in one or more parts, each an ordinary `run_suite` run nested under it (with
its traces and report), so a trial can be pruned after a part.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragworks.config import AgentConfig
from ragworks.errors import EvalError
from ragworks.eval._stats import bootstrap_ci
from ragworks.eval.judges import Judge
from ragworks.eval.suite import EvalSuite

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"
"""MLflow's own tag for a nested run's parent (what `start_run(nested=True)` sets)."""
ROLE_TAG = "ragworks.tune.role"
"""`study` (the parent), `trial`, `start`, `holdout`, or `part` (one `run_suite` run of a scored config)."""
_PARAM_CHARS = 500

Report = Callable[[int, float], None]
"""Called after each part with its step and the metric's running mean; may raise to stop (pruning)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    """How one config scored on one part of the suite."""

    run_id: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    rows: int
    latency_ms: float
    """Median duration of the answers' traces."""
    latency_p95_ms: float
    means: dict[str, float] = field(default_factory=dict)
    """Every metric the run scored, by name."""


@dataclass(slots=True, kw_only=True)
class ConfigScorer:
    """Scores configs on suite parts, each as a run nested under the study's run."""

    client: MlflowClient
    experiment_id: str
    parent_id: str
    metric: str
    scorers: Sequence[str]
    judge: Judge
    k: int
    concurrency: int = 8

    def score(
        self,
        cfg: AgentConfig,
        suite: EvalSuite,
        *,
        name: str,
        role: str,
        params: Mapping[str, Any],
        parts: int = 1,
        report: Report | None = None,
    ) -> Score:
        """Score `cfg` on `suite` in `parts` parts; the run is FINISHED, KILLED (stopped) or FAILED.

        Raises:
            EvalError: a part had rows in error, or no row was scored on the metric.
        """
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={PARENT_TAG: self.parent_id, ROLE_TAG: role}
        )
        run_id = run.info.run_id
        for key, value in params.items():
            self.client.log_param(run_id, key, _param_text(value))
        values: dict[str, list[float]] = {}
        latencies: list[float] = []
        status = "FAILED"
        try:
            for step, part in enumerate(split_rows(suite, parts)):
                part_values, part_latencies = self._score_part(cfg, part, run_id, f"{name} part {step + 1}")
                for metric, vals in part_values.items():
                    values.setdefault(metric, []).extend(vals)
                latencies.extend(part_latencies)
                if report is not None:
                    status = "KILLED"  # a report that raises stops the trial: a pruned run, not a failed one
                    report(step, _mean(values.get(self.metric, [])))
                    status = "FAILED"
            score = self._summary(run_id, values, latencies)
            status = "FINISHED"
            return score
        finally:
            self._log(run_id, values, latencies)
            self.client.set_terminated(run_id, status=status)

    def _score_part(
        self, cfg: AgentConfig, part: EvalSuite, parent: str, name: str
    ) -> tuple[dict[str, list[float]], list[float]]:
        from ragworks.eval.runner import run_suite

        result = run_suite(
            cfg,
            part,
            scorers=list(self.scorers),
            judge=self.judge,
            k=self.k,
            run_name=name,
            concurrency=self.concurrency,
            report_format="md",
        )
        self.client.set_tag(result.run_id, PARENT_TAG, parent)
        self.client.set_tag(result.run_id, ROLE_TAG, "part")
        if result.errors:
            cause = first_failure(result.table)
            raise EvalError(f"{name}: {'; '.join(result.errors)}" + (f": {cause}" if cause else ""))
        return dict(result.values), trace_latencies(result.run_id)

    def _summary(self, run_id: str, values: dict[str, list[float]], latencies: list[float]) -> Score:
        scored = values.get(self.metric, [])
        if not scored:
            raise EvalError(f"No row was scored on {self.metric!r}; check the suite's expectations.")
        low, high = bootstrap_ci(scored)
        return Score(
            run_id=run_id,
            metric=self.metric,
            mean=_mean(scored),
            ci_low=low,
            ci_high=high,
            rows=len(scored),
            latency_ms=statistics.median(latencies) if latencies else float("nan"),
            latency_p95_ms=_p95(latencies),
            means={m: _mean(v) for m, v in values.items() if v},
        )

    def _log(self, run_id: str, values: dict[str, list[float]], latencies: list[float]) -> None:
        from mlflow.entities import Metric

        metrics = []
        for name, vals in sorted(values.items()):
            if not vals:
                continue
            low, high = bootstrap_ci(vals)
            for suffix, number in (("mean", _mean(vals)), ("ci_low", low), ("ci_high", high)):
                metrics.append((f"{name}/{suffix}", number))
            metrics.append((f"{name}/rows", float(len(vals))))
        if latencies:
            metrics += [
                ("latency_ms/median", statistics.median(latencies)),
                ("latency_ms/p95", _p95(latencies)),
            ]
        if metrics:
            stamp = _now_ms()
            batch = [Metric(key=k, value=float(v), timestamp=stamp, step=0) for k, v in metrics]
            self.client.log_batch(run_id, metrics=batch)


def split_rows(suite: EvalSuite, parts: int) -> list[EvalSuite]:
    """The suite's rows in `parts` contiguous parts (fewer when it has fewer rows), each a suite."""
    rows = list(suite.rows)
    parts = max(1, min(parts, len(rows)))
    size, extra = divmod(len(rows), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(suite.model_copy(update={"rows": rows[start:end]}))
        start = end
    return out


def first_failure(table: pd.DataFrame) -> str:
    """Why the first failed row failed: its trace's root span status (empty when no row failed)."""
    import mlflow

    failed = [
        t for t, s in zip(table["trace_id"], table["state"], strict=True) if str(s).upper().endswith("ERROR")
    ]
    if not failed:
        return ""
    trace = mlflow.get_trace(str(failed[0]))
    spans = trace.data.spans if trace is not None else []
    root = next((span for span in spans if span.parent_id is None), None)
    return str(root.status.description) if root is not None else ""


def trace_latencies(run_id: str) -> list[float]:
    """The durations (ms) of a run's traces: the time each answer took, scoring excluded."""
    import mlflow

    traces = mlflow.search_traces(run_id=run_id, return_type="list")
    return [float(t.info.execution_duration) for t in traces if t.info.execution_duration is not None]


def _param_text(value: Any) -> str:
    # Any: a config value
    return str(value)[:_PARAM_CHARS]


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def _p95(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
