"""People's labels for judge calibration: JSONL rows or CSV with `label_<METRIC>` columns.

A JSONL row: `{"question", "answer", "context": text or list, "labels": {METRIC: bool or number}}`,
optionally `expected_response` / `expected_facts` (for correctness). A CSV has `question`, `answer`,
`context` (text, or a JSON list) and one `label_<METRIC>` column per metric (true/false/yes/no/1/0
or a number); an empty cell means that row has no label for that metric.

Example:
    >>> parse_label("yes"), parse_label("0.5"), parse_label("")
    (True, 0.5, None)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragworks.errors import EvalError

_TRUE = {"true", "yes", "y", "pass", "passed"}
_FALSE = {"false", "no", "n", "fail", "failed"}


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelledRow:
    """One judged example and what people said about it, metric by metric."""

    question: str
    answer: str
    contexts: tuple[str, ...] = ()
    labels: Mapping[str, bool | float] = field(default_factory=dict)
    expected_response: str | None = None
    expected_facts: tuple[str, ...] = ()


def parse_label(value: object) -> bool | float | None:
    """A label as a bool or a number; None when empty.

    Raises:
        EvalError: the value is neither a bool, a number, nor yes/no/true/false.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    try:
        return float(text)
    except ValueError:
        raise EvalError(
            f"Label {value!r} is not a bool or a number: write true/false, yes/no or 0.8."
        ) from None


def _contexts(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        text, stripped = value, value.strip()
        if not stripped.startswith("["):
            return (text,) if stripped else ()
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return (text,)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(str(v) for v in value)
    raise EvalError(f"context must be text or a list of texts, got {type(value).__name__}.")


def _row(raw: Mapping[str, Any], labels: Mapping[str, object], where: str) -> LabelledRow:
    if not isinstance(raw.get("question"), str) or not isinstance(raw.get("answer"), str):
        raise EvalError(f"{where}: each row needs text 'question' and 'answer' fields.")
    parsed = {}
    for metric, value in labels.items():
        try:
            label = parse_label(value)
        except EvalError as exc:
            raise EvalError(f"{where}, label {metric!r}: {exc}") from None
        if label is not None:
            parsed[str(metric)] = label
    facts = raw.get("expected_facts") or ()
    return LabelledRow(
        question=raw["question"],
        answer=raw["answer"],
        contexts=_contexts(raw.get("context", raw.get("contexts"))),
        labels=parsed,
        expected_response=raw.get("expected_response") or None,
        expected_facts=tuple(json.loads(facts) if isinstance(facts, str) else facts),
    )


def _jsonl(path: Path) -> list[LabelledRow]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{where}: not JSON ({exc.msg}); write one JSON object per line.") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
            raise EvalError(f"{where}: each row needs a 'labels' object, e.g. {{\"faithfulness\": true}}.")
        rows.append(_row(raw, raw["labels"], where))
    return rows


def _csv(path: Path) -> list[LabelledRow]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        columns = [c for c in reader.fieldnames or [] if c.startswith("label_")]
        if not columns:
            raise EvalError(f"{path}: no label columns; name them label_<metric>, e.g. label_faithfulness.")
        return [
            _row(raw, {c[len("label_") :]: raw[c] for c in columns}, f"{path}:{number}")
            for number, raw in enumerate(reader, 2)
        ]


def load_labels(path: str | Path) -> list[LabelledRow]:
    """Read labelled rows from `.jsonl` or `.csv` / `.tsv`.

    Raises:
        EvalError: the file is missing, empty, or a row is malformed (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"Labels file {str(path)!r} not found: pass a .jsonl or .csv file of labelled rows.")
    rows = _csv(path) if path.suffix.lower() in {".csv", ".tsv"} else _jsonl(path)
    if not rows:
        raise EvalError(f"Labels file {str(path)!r} has no rows.")
    return rows
