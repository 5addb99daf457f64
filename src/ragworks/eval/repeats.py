"""Repeat judging: each row judged N times, so a judge whose verdicts flip between runs is visible.

The run's own values are the first judging; `judge_again` scores every predicted row N - 1 more
times with the judge's repeat twin (`Judge.for_repeat(i)`, which LLM judges have: their cache key
then carries the repeat index, so a repeat is a new call, not the cached reply; a judge without it,
such as the deterministic offline judge, is simply called again). Per metric it reports the flip
rate (the share of rows whose pass / fail differs across repeats; a row passes at a value of at
least `PASS_AT`) and the within-row variance (the mean over rows of the sample variance of their N
values).

Example:
    >>> stats = repeat_stats("faithfulness", [[1.0, 1.0], [0.2, 0.9]])
    >>> stats.flip_rate, round(stats.within_row_var, 3)
    (0.5, 0.122)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ragworks.eval._extract import question_of
from ragworks.eval._stats import as_float
from ragworks.eval.paired import DECIMALS

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.genai.scorers import Scorer

    from ragworks.eval.judges import Judge

PASS_AT = 0.5
"""A row passes a metric when its value is at least this (a 0 / 1 verdict passes at 1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RepeatStats:
    """One metric judged `repeats` times per row."""

    metric: str
    repeats: int
    rows: int
    """Rows with a value in every repeat (rows in error in any repeat are left out)."""
    flipped: int
    """Rows whose pass / fail differs between repeats."""
    flip_rate: float
    within_row_var: float
    """Mean over rows of the sample variance of the row's values."""
    errors: int = 0
    """Judgings in error in the repeats after the first (their rows are left out of the figures)."""


def repeat_stats(metric: str, values: Sequence[Sequence[float | None]], *, errors: int = 0) -> RepeatStats:
    """Flip rate and within-row variance of per-row value lists (one list per row, one value per repeat)."""
    # at DECIMALS, so a judge that is deterministic up to float rounding reads as exactly stable
    complete = [[round(x, DECIMALS) for x in v if x is not None] for v in values if v and None not in v]
    repeats = max((len(v) for v in values), default=0)
    flipped = sum(len({x >= PASS_AT for x in row}) > 1 for row in complete)
    # equal values have no variance (np.var's mean can differ from them by a rounding error)
    variances = [float(np.var(row, ddof=1)) if len(set(row)) > 1 else 0.0 for row in complete if len(row) > 1]
    return RepeatStats(
        metric=metric,
        repeats=repeats,
        rows=len(complete),
        flipped=flipped,
        flip_rate=flipped / len(complete) if complete else float("nan"),
        within_row_var=float(np.mean(variances)) if variances else float("nan"),
        errors=errors,
    )


def repeat_judge(judge: Judge, repeat: int) -> Judge:
    """The judge for repeat `repeat` (0 is the judge itself): its `for_repeat` twin, else the judge."""
    twin = getattr(judge, "for_repeat", None)
    return twin(repeat) if repeat and callable(twin) else judge


def judge_again(
    frame: pd.DataFrame,
    records: Sequence[dict[str, Any]],
    first: dict[str, list[float | None]],
    make: Callable[[int], Sequence[Scorer]],
    *,
    repeats: int,
    workers: int,
) -> dict[str, RepeatStats]:
    """Score MLflow's result rows `repeats - 1` more times and summarise each metric's stability.

    Args:
        frame: `mlflow.genai.evaluate`'s `result_df` (request, response, trace).
        records: the suite's records, whose expectations the frame does not keep intact (list
            values come back as NaN); matched to the frame's rows by question.
        first: each repeated metric's values from the run itself (the first judging), by row.
        make: the scorers of repeat `i` (built on `repeat_judge(judge, i)`).
        repeats: judgings per row in all, the first included.
        workers: scorer calls at once (an LLM judge keeps its own bound too).
    """
    rows = _rows(frame, records)
    values = {name: [[v] for v in column] for name, column in first.items()}
    errors = dict.fromkeys(values, 0)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ragworks-repeat") as pool:
        for repeat in range(1, repeats):
            jobs = [(s, i, pool.submit(_value, s, row)) for s in make(repeat) for i, row in enumerate(rows)]
            for scorer, i, job in jobs:
                value, erred = job.result()
                if scorer.name in values:
                    values[scorer.name][i].append(value)
                    errors[scorer.name] += erred
    return {name: repeat_stats(name, rows_, errors=errors[name]) for name, rows_ in values.items()}


def _rows(frame: pd.DataFrame, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each result row as scorer arguments, with its suite record's expectations (Any: JSON, a Trace)."""
    from mlflow.entities import Trace

    by_question: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_question.setdefault(question_of(record.get("inputs")), []).append(record)
    out = []
    for row in frame.to_dict(orient="records"):
        trace = row.get("trace")
        matches = by_question.get(question_of(row.get("request")), [])
        out.append(
            {
                "inputs": row.get("request"),
                "outputs": row.get("response"),
                "expectations": dict(matches.pop(0).get("expectations") or {}) if matches else {},
                "trace": Trace.from_json(trace) if isinstance(trace, str) else trace,
            }
        )
    return out


def _value(scorer: Scorer, row: dict[str, Any]) -> tuple[float | None, bool]:
    """The scorer's value on a row (None when it had nothing to score or erred), and whether it erred."""
    try:
        feedback = scorer.run(**row)
    except Exception:  # counted: an error on one repeat leaves that row out of the figures
        return None, True
    if getattr(feedback, "error", None) is not None:
        return None, True
    return (None if feedback is None else as_float(getattr(feedback, "value", feedback))), False


def repeat_metrics(stats: dict[str, RepeatStats]) -> dict[str, float]:
    """The stability figures as MLflow metrics: `<name>/flip_rate`, `<name>/within_row_var`."""
    logged = {}
    for name, s in stats.items():
        logged[f"{name}/flip_rate"] = s.flip_rate
        logged[f"{name}/within_row_var"] = s.within_row_var
        logged[f"{name}/repeat_rows"] = float(s.rows)
        logged[f"{name}/repeat_errors"] = float(s.errors)
    return {k: v for k, v in logged.items() if not math.isnan(v)}


def repeat_lines(stats: dict[str, RepeatStats]) -> list[str]:
    """One text line per metric: repeats, flip rate, within-row variance."""
    return [
        f"repeats {s.metric}: {s.repeats} judgings of {s.rows} rows, flip rate {s.flip_rate:.3f} "
        f"({s.flipped} rows flipped pass/fail at {PASS_AT}), within-row variance {s.within_row_var:.4f}"
        + (f", {s.errors} judgings in error" if s.errors else "")
        for s in stats.values()
    ]


__all__ = [
    "PASS_AT",
    "RepeatStats",
    "judge_again",
    "repeat_judge",
    "repeat_lines",
    "repeat_metrics",
    "repeat_stats",
]
