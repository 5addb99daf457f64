"""The monitor's MLflow run: one per experiment, found again after a restart, holding the watermark.

Its tags carry the state a restarted monitor needs (the watermark: the newest trace timestamp a
pass has read; the number of windows logged); its metrics are each window's aggregates, with the
window number as the step. The state lives in the tracking store, never only in memory.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragworks.eval._stats import MetricSummary

if TYPE_CHECKING:
    from mlflow import MlflowClient

MONITOR_TAG = "ragworks.monitor"
WATERMARK_TAG = "ragworks.monitor.watermark_ms"
WINDOWS_TAG = "ragworks.monitor.windows"


@dataclass(slots=True, kw_only=True)
class MonitorRun:
    """The monitor run of one experiment and the state read from it."""

    run_id: str
    watermark_ms: int
    """Traces older than this (less the lookback) were read by an earlier pass."""
    windows: int
    """Windows logged so far; the next window's step is this number."""


def open_monitor_run(client: MlflowClient, experiment_id: str, *, tags: Mapping[str, str]) -> MonitorRun:
    """The experiment's monitor run (the newest one tagged `ragworks.monitor`), created when there is none."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{MONITOR_TAG}` = 'true'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if found:
        run = found[0]
        client.update_run(run.info.run_id, status="RUNNING")
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value)
        return MonitorRun(
            run_id=run.info.run_id,
            watermark_ms=int(run.data.tags.get(WATERMARK_TAG, "0")),
            windows=int(run.data.tags.get(WINDOWS_TAG, "0")),
        )
    created = client.create_run(
        experiment_id, run_name="ragworks-monitor", tags={MONITOR_TAG: "true", **tags}
    )
    return MonitorRun(run_id=created.info.run_id, watermark_ms=0, windows=0)


def log_window(
    client: MlflowClient,
    run: MonitorRun,
    metrics: Mapping[str, MetricSummary],
    counts: Mapping[str, int],
    *,
    watermark_ms: int,
) -> None:
    """Log one window's aggregates (step = window number), then advance the watermark and the count.

    The watermark moves only after the window's assessments are stored, so a crash before this
    call reads those traces again; their assessments then mark them done.
    """
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    step = run.windows
    values: dict[str, float] = {f"traces/{k}": float(v) for k, v in counts.items()}
    for name, summary in metrics.items():
        values |= {
            f"{name}/n": float(summary.n),
            f"{name}/errors": float(summary.errors),
        }
        if summary.n:
            values |= {f"{name}/mean": summary.mean, f"{name}/ci_low": summary.ci_low}
            values[f"{name}/ci_high"] = summary.ci_high
    batch = [Metric(key=k, value=v, timestamp=now, step=step) for k, v in values.items()]
    run.watermark_ms = max(run.watermark_ms, watermark_ms)
    run.windows += 1
    tags = [RunTag(WATERMARK_TAG, str(run.watermark_ms)), RunTag(WINDOWS_TAG, str(run.windows))]
    client.log_batch(run.run_id, metrics=batch, tags=tags)


def close_monitor_run(client: MlflowClient, run: MonitorRun, *, status: str = "FINISHED") -> None:
    """Mark the run ended (a later monitor reopens it)."""
    client.set_terminated(run.run_id, status=status)
