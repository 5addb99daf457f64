"""Calibrated decision thresholds: the file `ragworks eval calibrate` writes and judges read.

The file is JSON: `{"judge": NAME, "labels": PATH, "thresholds": {METRIC: float}, "agreement": {...}}`.
`ThresholdJudge` wraps a judge so that every judgement of a calibrated metric says whether it
passes (`details["passed"]`, `details["threshold"]`) and why, in its rationale.

Example:
    >>> from ragworks.eval.judges import get_judge
    >>> judge = ThresholdJudge(get_judge("offline:lexical"), {"answer_relevance": 0.5})
    >>> judge.answer_relevance("What is BM25?", "BM25 is a ranking function.").details["passed"]
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ragworks.errors import ConfigError
from ragworks.eval.judges import Judge, Judgement, get_judge


def write_thresholds(
    path: str | Path,
    thresholds: Mapping[str, float],
    *,
    judge: str,
    labels: str,
    agreement: Mapping[str, Any] | None = None,  # Any: the per-metric agreement dicts, JSON-ready
) -> None:
    """Write a thresholds file (its folder is created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = {"judge": judge, "labels": labels, "thresholds": dict(thresholds), "agreement": agreement or {}}
    target.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_thresholds(path: str | Path, *, judge: str | None = None) -> dict[str, float]:
    """The thresholds of a file `calibrate` wrote.

    Raises:
        ConfigError: the file is missing or malformed, or was calibrated for another judge than `judge`.
    """
    source = Path(path)
    try:
        body = json.loads(source.read_text(encoding="utf-8"))
        thresholds = {str(k): float(v) for k, v in body["thresholds"].items()}
    except FileNotFoundError:
        raise ConfigError(
            f"Thresholds file {str(source)!r} not found: write one with "
            "`ragworks eval calibrate LABELS --judge NAME --thresholds-out FILE`."
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"Thresholds file {str(source)!r} is not one `ragworks eval calibrate` wrote ({exc!r}): "
            'expected JSON with {"thresholds": {"faithfulness": 0.5, ...}}.'
        ) from None
    calibrated_for = body.get("judge")
    if judge is not None and calibrated_for and calibrated_for != judge:
        raise ConfigError(
            f"Thresholds file {str(source)!r} was calibrated for judge {calibrated_for!r}, not {judge!r}: "
            f"calibrate {judge!r} on your labels, or use the judge the file names."
        )
    return thresholds


def _decide(metric: str, judgement: Judgement, threshold: float | None) -> Judgement:
    if threshold is None:
        return judgement
    passed = judgement.score >= threshold
    verdict = "PASS" if passed else "FAIL"
    sign = ">=" if passed else "<"
    return replace(
        judgement,
        rationale=f"{verdict} ({metric} {judgement.score:.3f} {sign} calibrated threshold {threshold}). "
        + judgement.rationale,
        details={**judgement.details, "passed": passed, "threshold": threshold},
    )


class ThresholdJudge:
    """A judge whose judgements of calibrated metrics also say pass or fail at their threshold."""

    def __init__(self, judge: Judge, thresholds: Mapping[str, float]) -> None:
        self.inner = judge
        self.name = judge.name
        self.thresholds = dict(thresholds)

    def __getattr__(self, attr: str) -> Any:  # Any: prepare / check / client of the wrapped judge
        return getattr(self.inner, attr)

    def faithfulness(self, question: str, answer: str, contexts: Sequence[str]) -> Judgement:
        """The wrapped judge's faithfulness, with its pass / fail."""
        judged = self.inner.faithfulness(question, answer, contexts)
        return _decide("faithfulness", judged, self.thresholds.get("faithfulness"))

    def answer_relevance(self, question: str, answer: str) -> Judgement:
        """The wrapped judge's answer relevance, with its pass / fail."""
        judged = self.inner.answer_relevance(question, answer)
        return _decide("answer_relevance", judged, self.thresholds.get("answer_relevance"))

    def context_relevance(self, question: str, passage: str) -> Judgement:
        """The wrapped judge's relevance of one passage, unchanged.

        Its threshold is calibrated on the mean over a row's passages, not on one passage.
        """
        return self.inner.context_relevance(question, passage)

    def correctness(
        self,
        question: str,
        answer: str,
        *,
        expected_response: str | None = None,
        expected_facts: Sequence[str] | None = None,
    ) -> Judgement:
        """The wrapped judge's correctness, with its pass / fail."""
        judged = self.inner.correctness(
            question, answer, expected_response=expected_response, expected_facts=expected_facts
        )
        return _decide("correctness", judged, self.thresholds.get("correctness"))


def with_thresholds(judge: str | Judge, path: str | Path | None, *, concurrency: int = 8) -> str | Judge:
    """The judge wrapped to decide pass / fail at the thresholds in `path` (unchanged when None).

    Raises:
        ConfigError: the file is missing, malformed, or calibrated for another judge.
    """
    if path is None:
        return judge
    resolved = get_judge(judge, concurrency=concurrency) if isinstance(judge, str) else judge
    return ThresholdJudge(resolved, load_thresholds(path, judge=resolved.name))
