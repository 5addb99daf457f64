"""The pass / fail gate of a suite run: threshold names checked first, thresholds, metrics in error.

A judged metric (one a judge computes) with rows in error, or with no row scored, fails the run:
a judge that could not run must never look like a pass. `allow_errors` reports them and passes.

Example:
    >>> check_threshold_names({"faithfulnes": 0.8}, ["faithfulness", "mrr"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ragworks.errors.ConfigError: --fail-under names unknown metric 'faithfulnes' (did you mean ...
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from ragworks.errors import ConfigError
from ragworks.eval._stats import MetricSummary

if TYPE_CHECKING:
    from mlflow.entities import RunInfo

MAX_ERROR_CHARS = 300


def check_every_row_traced() -> None:
    """Refuse a sampling ratio below 1 before anything runs: the run reads every row's trace."""
    from mlflow.environment_variables import MLFLOW_TRACE_SAMPLING_RATIO

    ratio = MLFLOW_TRACE_SAMPLING_RATIO.get()
    if ratio is not None and ratio < 1:
        raise ConfigError(
            f"ragworks eval reads the trace of every row, but MLFLOW_TRACE_SAMPLING_RATIO={ratio} "
            "drops traces: unset it (or set it to 1) for evaluation."
        )


def check_threshold_names(fail_under: Mapping[str, float] | None, valid: Sequence[str]) -> None:
    """Refuse thresholds on metrics the run will not compute, before anything runs.

    A name is valid when it is a scorer's name, or `<scorer>/<part>` for a scorer whose feedback
    has several parts (some MLflow scorers).

    Raises:
        ConfigError: a name is not one of `valid`; the message lists the valid names.
    """
    unknown = [n for n in (fail_under or {}) if n not in valid and n.partition("/")[0] not in valid]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "metric" if len(unknown) == 1 else "metrics"
    raise ConfigError(
        f"--fail-under names unknown {noun} {', '.join(hints)}. Valid names: {', '.join(valid)}."
    )


def threshold_failures(
    metrics: Mapping[str, MetricSummary], fail_under: Mapping[str, float] | None
) -> list[str]:
    """One line per threshold that did not hold (a metric with no value fails its threshold)."""
    failures = []
    for name, minimum in (fail_under or {}).items():
        summary = metrics.get(name)
        if summary is None or summary.n == 0:
            failures.append(f"{name}: no value was computed (threshold {minimum})")
        elif summary.mean < minimum:
            failures.append(f"{name}: mean {summary.mean:.3f} < {minimum}")
    return failures


def judged_errors(metrics: Mapping[str, MetricSummary], judged: Collection[str]) -> list[str]:
    """One line per judged metric with rows in error or none scored: its name, the count, the first error."""
    problems = []
    for name in judged:
        summary = metrics.get(name)
        if summary is None or (summary.errors == 0 and summary.n > 0):
            continue  # absent: the scorer had nothing to judge on any row (e.g. no expectations)
        rows = summary.n + summary.errors
        line = f"{name}: {summary.errors} of {rows} rows errored"
        if summary.n == 0:
            line += ", no row was scored (n=0)"
        if summary.first_error:
            line += f"; first error: {_short(summary.first_error)}"
        problems.append(line)
    return problems


def failed_predictions(trace_ids: Sequence[object], states: Sequence[object]) -> list[str]:
    """One line when the agent failed on some rows (their traces' state is ERROR), naming the first trace."""
    pairs = zip(trace_ids, states, strict=True)
    failed = [str(t) for t, s in pairs if str(getattr(s, "value", s)).upper() == "ERROR"]
    if not failed:
        return []
    rows = len(states)
    return [f"predictions: the agent failed on {len(failed)} of {rows} rows (first: trace {failed[0]})"]


def missing_traces(run: RunInfo, *, rows: int) -> list[str]:
    """One line when the tracking store holds fewer traces for the run than the suite has rows.

    A store that dropped traces (a full connection pool, a store that went away) leaves the run's
    assessments incomplete, which must not pass as a complete evaluation.
    """
    import mlflow

    stored = mlflow.search_traces(
        locations=[run.experiment_id], run_id=run.run_id, include_spans=False, return_type="list"
    )
    missing = rows - len(stored)
    if missing <= 0:
        return []
    return [
        f"traces: {missing} of {rows} rows have no trace stored in the run "
        "(the tracking store dropped them or the agent failed before tracing; see the log)"
    ]


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."
