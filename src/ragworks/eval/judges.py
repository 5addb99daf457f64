"""Judges by name: `offline` (no model), `openai:<model>` and `databricks:<endpoint>`.

A judge grades one answer at a time and returns a `Judgement` (a score in [0, 1], a rationale and
details). Scorers (`ragworks.eval.scorers`) wrap judges as MLflow scorers.

Example:
    >>> judge = get_judge("offline:lexical")
    >>> judge.faithfulness("What does MLflow log?", "MLflow logs runs.", ["MLflow logs runs."]).score
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ragworks.errors import ConfigError

OFFLINE_NAMES = ("offline", "offline:lexical", "offline:dense")


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """One grade: a score in [0, 1], why, and backend-specific details."""

    score: float
    """1.0 is best (faithful, relevant, correct)."""
    rationale: str
    """A short human-readable reason, e.g. the unsupported claims."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Per-claim / per-sentence verdicts; JSON-serialisable (Any: the shape depends on the metric)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")


@runtime_checkable
class Judge(Protocol):
    """What every judge backend offers.

    A judge may also have `prepare()`, which `run_suite` calls on its own thread before judging from
    a pool: it loads what the judge loads lazily (a client, a model), so no judge thread imports;
    and `check()`, which `run_suite` calls before any row runs and which raises `ConfigError` /
    `EvalError` when the judge cannot work (no key, an endpoint that does not answer).

    Usage example:
        >>> judge = get_judge("offline:lexical")
        >>> judge.answer_relevance("What is BM25?", "BM25 is a keyword ranking function.").score > 0.5
        True
    """

    name: str

    def faithfulness(self, question: str, answer: str, contexts: Sequence[str]) -> Judgement:
        """How much of the answer the contexts support."""
        ...

    def answer_relevance(self, question: str, answer: str) -> Judgement:
        """Whether the answer addresses the question (a noncommittal answer scores 0)."""
        ...

    def context_relevance(self, question: str, passage: str) -> Judgement:
        """Whether one retrieved passage is relevant to the question."""
        ...

    def correctness(
        self,
        question: str,
        answer: str,
        *,
        expected_response: str | None = None,
        expected_facts: Sequence[str] | None = None,
    ) -> Judgement:
        """How many expected facts (or the expected response) the answer states."""
        ...


def get_judge(
    name: str | Judge = "offline",
    *,
    cache: str | Path | bool | None = True,
    concurrency: int = 8,
    timeout: float = 60.0,
    max_attempts: int = 5,
) -> Judge:
    """Build a judge by name.

    Args:
        name: `offline` (lexical, plus MiniLM when the dense extra is installed), `offline:lexical`,
            `offline:dense`, `openai:<model>` (OPENAI_BASE_URL / OPENAI_API_KEY) or
            `databricks:<endpoint>` (auth from the databricks-sdk Config); a Judge is returned as is.
        cache: LLM judges only: a SQLite path, True for the default path, False/None for no cache.
        concurrency: LLM judges only: the most judge calls in flight at once.
        timeout: LLM judges only: seconds per HTTP call.
        max_attempts: LLM judges only: tries per call (429, 5xx, timeouts and malformed JSON retry).

    Raises:
        ConfigError: the name is unknown or names no model.
    """
    if not isinstance(name, str):
        return name
    if name in OFFLINE_NAMES:
        from ragworks.eval._offline_judge import OfflineJudge

        dense = {"offline": None, "offline:lexical": False, "offline:dense": True}[name]
        return OfflineJudge(dense=dense)
    provider, _, model = name.partition(":")
    if provider not in {"openai", "databricks"} or not model:
        raise ConfigError(
            f"Unknown judge {name!r}. Use 'offline', 'offline:lexical', 'offline:dense', "
            "'openai:<model>' (e.g. openai:gpt-4o-mini) or 'databricks:<endpoint>'."
        )
    from ragworks.eval._llm_judge import LLMJudge, make_client

    client = make_client(
        provider, model, cache=cache, concurrency=concurrency, timeout=timeout, max_attempts=max_attempts
    )
    return LLMJudge(client, name=name)


__all__ = ["OFFLINE_NAMES", "Judge", "Judgement", "get_judge"]
