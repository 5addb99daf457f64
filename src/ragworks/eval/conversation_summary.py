"""What a run with conversations adds: per-turn means and the conversation-level metrics.

The turns are ordinary rows of the results table (with `conversation` and `turn` columns); this
groups them back into conversations and scores each with `consistency` and `retention` (see
`ragworks.eval._conversation_scores`). The two become metrics of the run
(`conversation_consistency`, `conversation_retention`: one value per conversation, so a
threshold may name them) and each scorer's mean per turn number is logged as
`turn_<n>/<metric>`.

Example:
    >>> summary = summarise_conversations(table, answers, records, judge=judge,  # doctest: +SKIP
    ...                                   metrics=["faithfulness"])
    >>> summary.metrics[CONSISTENCY].mean, summary.per_turn[2]["faithfulness"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ragworks.eval._conversation_scores import consistency, retention
from ragworks.eval._stats import MetricSummary, as_float, bootstrap_ci
from ragworks.eval.conversations import conversation_ids, turn_of, turn_of_request
from ragworks.eval.judges import Judge

if TYPE_CHECKING:
    import pandas as pd

CONSISTENCY = "conversation_consistency"
RETENTION = "conversation_retention"
CONVERSATION_METRICS = (CONSISTENCY, RETENTION)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Turn:
    number: int
    question: str
    answer: str
    facts: tuple[str, ...]


@dataclass(slots=True, kw_only=True)
class ConversationSummary:
    """The conversation metrics, each scorer's mean per turn number, and one line per conversation."""

    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    per_turn: dict[int, dict[str, float]] = field(default_factory=dict)
    """Turn number -> metric -> mean over the conversations' turns of that number."""
    rows: list[dict[str, object]] = field(default_factory=list)
    """Per conversation: id, turns, consistency, retention and their rationales."""

    def lines(self) -> list[str]:
        """Plain-text lines: the per-turn means, then each conversation's scores."""
        out = []
        for turn, means in sorted(self.per_turn.items()):
            shown = ", ".join(f"{name} {_fmt(value)}" for name, value in means.items())
            out.append(f"turn {turn}: {shown}")
        for row in self.rows:
            out.append(
                f"conversation {row['conversation']} ({row['turns']} turns): consistency "
                f"{_fmt(row[CONSISTENCY])}, retention {_fmt(row[RETENTION])}; {row['consistency_rationale']}"
            )
        return out

    def mlflow_metrics(self) -> dict[str, float]:
        """`<metric>/mean` of the conversation metrics and `turn_<n>/<metric>` per turn number."""
        logged = {f"{name}/mean": m.mean for name, m in self.metrics.items()}
        for turn, means in self.per_turn.items():
            logged.update({f"turn_{turn}/{name}": value for name, value in means.items()})
        return {k: v for k, v in logged.items() if not math.isnan(v)}


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) and not math.isnan(value) else "-"


def turn_columns(
    requests: Sequence[object], records: Sequence[Mapping[str, Any]]
) -> tuple[list[str | None], list[int | None]]:
    """The `conversation` and `turn` columns of the results table (None for single-turn rows).

    Any: JSON records; `requests` are the traces' requests (the agent's, or the record's inputs).
    """
    known = conversation_ids(records)
    keys = [turn_of_request(r, known) if known else None for r in requests]
    return [k[0] if k else None for k in keys], [k[1] if k else None for k in keys]


def pairing_inputs(
    requests: Sequence[object],
    conversations: Sequence[str | None],
    turns: Sequence[int | None],
    questions: Sequence[str],
) -> list[object]:
    """What pairs a row with a later run's: a turn by its conversation, number and question (its
    history holds answers that differ between runs), any other row by its request."""
    return [
        {"conversation_id": c, "turn": t, "question": q} if c is not None else r
        for r, c, t, q in zip(requests, conversations, turns, questions, strict=True)
    ]


def summarise_conversations(
    table: pd.DataFrame,
    answers: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    *,
    judge: Judge,
    metrics: Sequence[str],
) -> ConversationSummary:
    """Group the table's turns into conversations and score each (Any: JSON records).

    Args:
        table: the results table with `conversation`, `turn`, `question` and a column per metric.
        answers: the full answer of each table row (the table's own column is cut short).
        records: the suite's records (their expectations give each turn's facts).
        judge: the run's judge (retention grades carried-over facts with its correctness).
        metrics: the per-row metrics to average per turn number.
    """
    facts = {turn_of(r.get("inputs")): _facts(r) for r in records}
    conversations: dict[str, list[_Turn]] = {}
    for i, (cid, number) in enumerate(zip(table["conversation"], table["turn"], strict=True)):
        if isinstance(cid, str) and number is not None and not _missing(number):
            turn = int(number)
            conversations.setdefault(cid, []).append(
                _Turn(
                    number=turn,
                    question=str(table["question"].iloc[i]),
                    answer=answers[i],
                    facts=facts.get((cid, turn), ()),
                )
            )
    summary = ConversationSummary(per_turn=_per_turn(table, metrics))
    scored: dict[str, list[float]] = {CONSISTENCY: [], RETENTION: []}
    errors: list[str] = []
    for cid, turns in conversations.items():
        row = _score(cid, sorted(turns, key=lambda t: t.number), judge, errors)
        summary.rows.append(row)
        for name in CONVERSATION_METRICS:
            if isinstance(row[name], float):
                scored[name].append(float(row[name]))  # type: ignore[arg-type]  # checked just above
    for name, values in scored.items():
        failed = errors if name == RETENTION else []
        if values or failed:
            summary.metrics[name] = _metric(name, values, failed)
        if values:
            summary.values[name] = values
    return summary


def _facts(record: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple((record.get("expectations") or {}).get("expected_facts") or ())


def _missing(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _score(cid: str, turns: list[_Turn], judge: Judge, errors: list[str]) -> dict[str, object]:
    """One conversation's consistency and retention (a judge error is counted, not raised)."""
    answers = [t.answer for t in turns]
    consistent = consistency(answers)
    kept: list[float] = []
    notes: list[str] = []
    for i, turn in enumerate(turns[1:], 1):
        earlier = [text for t in turns[:i] for text in (t.question, t.answer)]
        try:
            graded = retention(judge, turn.question, turn.answer, turn.facts, earlier)
        except Exception as exc:  # a judge that failed must show as an error, not as a low score
            errors.append(f"conversation {cid} turn {turn.number}: {type(exc).__name__}: {exc}")
            continue
        if graded is not None:
            kept.append(graded[0])
            notes.append(f"turn {turn.number}: {graded[1]}")
    return {
        "conversation": cid,
        "turns": len(turns),
        CONSISTENCY: consistent[0] if consistent else None,
        "consistency_rationale": consistent[1] if consistent else "one turn: nothing to compare",
        RETENTION: float(np.mean(kept)) if kept else None,
        "retention_rationale": "; ".join(notes) or "no turn expects a fact said earlier",
    }


def _per_turn(table: pd.DataFrame, metrics: Sequence[str]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for name in metrics:
        if name not in table.columns:
            continue
        by_turn: dict[int, list[float]] = {}
        for number, value in zip(table["turn"], table[name], strict=True):
            if number is not None and not _missing(number) and (v := as_float(value)) is not None:
                by_turn.setdefault(int(number), []).append(v)
        for turn, values in by_turn.items():
            out.setdefault(turn, {})[name] = float(np.mean(values))
    return dict(sorted(out.items()))


def _metric(name: str, values: list[float], errors: list[str]) -> MetricSummary:
    low, high = bootstrap_ci(values)
    return MetricSummary(
        name=name,
        mean=float(np.mean(values)) if values else float("nan"),
        ci_low=low,
        ci_high=high,
        n=len(values),
        errors=len(errors),
        first_error=errors[0] if errors else "",
    )
