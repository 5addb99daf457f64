"""Statistics of a suite run: per-metric means with a bootstrap interval (paired comparisons: `paired`).

Example:
    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSummary:
    """One metric over the suite: mean, 95% bootstrap interval, rows scored and rows in error."""

    name: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    errors: int = 0
    first_error: str = ""
    """The error message of the first row in error (empty when none erred)."""


@dataclass(slots=True, kw_only=True)
class MetricColumns:
    """What `summarise` reads from MLflow's result frame, metric by metric."""

    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    """Per-row values of each metric that has any (for histograms)."""
    columns: dict[str, list[object]] = field(default_factory=dict)
    """Table columns: `<name>` (the row values), `<name>/rationale` and `<name>/error`."""


def bootstrap_ci(
    values: Sequence[float], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def as_float(value: object) -> float | None:
    """A metric value as a float: numbers, booleans and yes / no; None for anything else or NaN."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and np.isnan(value)):
        return float(value)
    if isinstance(value, str) and value.lower() in {"yes", "no"}:
        return float(value.lower() == "yes")
    return None


def metric_names(scorer_names: Sequence[str], frame: pd.DataFrame) -> list[str]:
    """The scorers' names, then any other `<name>/value` column MLflow produced (expectations aside)."""
    extra = [
        c[: -len("/value")]
        for c in frame.columns
        if c.endswith("/value") and c[: -len("/value")] not in scorer_names
    ]
    return list(scorer_names) + [n for n in extra if not n.startswith("expected_")]


def summarise(frame: pd.DataFrame, names: Sequence[str]) -> MetricColumns:
    """Each metric's summary, values and table columns from MLflow's `result_df`."""
    out = MetricColumns()
    for name in names:
        row_values = [as_float(v) for v in _column(frame, f"{name}/value")]
        errors = _column(frame, f"{name}/error_message")
        messages = [e for e in errors if isinstance(e, str) and e]
        out.columns[name] = list(row_values)
        out.columns[f"{name}/rationale"] = _column(frame, f"{name}/rationale")
        out.columns[f"{name}/error"] = errors
        numbers = [v for v in row_values if v is not None]
        if numbers:
            out.values[name] = numbers
        if numbers or messages:
            out.metrics[name] = _summary(name, numbers, messages)
    return out


def _column(frame: pd.DataFrame, name: str) -> list[object]:
    return list(frame[name]) if name in frame.columns else [None] * len(frame)


def _summary(name: str, numbers: list[float], errors: list[str]) -> MetricSummary:
    low, high = bootstrap_ci(numbers)
    return MetricSummary(
        name=name,
        mean=float(np.mean(numbers)) if numbers else float("nan"),
        ci_low=low,
        ci_high=high,
        n=len(numbers),
        errors=len(errors),
        first_error=errors[0] if errors else "",
    )
