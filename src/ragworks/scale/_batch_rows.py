"""Answering one question of a batch: the agent's answer, its sources, trace id and latency, or the error.

The same code answers a row on the local worker pool and on a Spark executor, so both give the same
answers. A failed call is never an answer: its row keeps an empty answer and gets `error` set.

Example:
    >>> row = answer_question(agent.predict, "How is the index stored?")  # doctest: +SKIP
    >>> row.answer, row.sources, row.error                                 # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

Predict = Callable[[Any], object]
"""One agent call: a Responses request (JSON) in, a response (pydantic or JSON) out. Any: a
ResponsesAgent's `predict` is typed for `ResponsesAgentRequest`, and MLflow's wrapper takes the dict."""
_MAX_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class AnsweredRow:
    """The outcome of one question."""

    answer: str = ""
    sources: list[str] = field(default_factory=list)
    source_ids: list[str] = field(default_factory=list)
    trace_id: str | None = None
    latency_s: float = 0.0
    error: str | None = None


class NoAnswerError(Exception):
    """The agent returned a response with no answer text in it."""


def answer_question(predict: Predict, question: object, *, traced: bool = True) -> AnsweredRow:
    """Ask `question`; any failure of the call (or an empty reply) is the row's `error`."""
    if not isinstance(question, str) or not question.strip():
        return AnsweredRow(error=f"The question is empty or not text ({question!r}); nothing was asked.")
    before = _last_trace_id() if traced else None
    started = time.perf_counter()
    try:
        response = _plain(predict({"input": [{"role": "user", "content": question}]}))
        answer = final_text(response)
    except Exception as exc:  # any failure of the agent is this row's error, never an answer
        latency = time.perf_counter() - started
        return AnsweredRow(trace_id=_new_trace_id(before, traced), latency_s=latency, error=_describe(exc))
    latency = time.perf_counter() - started
    sources = _sources(response)
    return AnsweredRow(
        answer=answer,
        sources=[str(s.get("source") or "") for s in sources],
        source_ids=[str(s.get("id") or "") for s in sources],
        trace_id=_new_trace_id(before, traced),
        latency_s=latency,
    )


def answer_all(
    predict: Predict,
    questions: Sequence[object],
    *,
    workers: int,
    traced: bool = True,
    on_done: Callable[[int], None] | None = None,
) -> list[AnsweredRow]:
    """Answer `questions` with at most `workers` calls at once; the results are in the questions' order.

    `predict` is shared by the threads (ragworks agents serve concurrent requests the same way).
    `on_done(n)` is told each time `n` more rows are finished (a progress bar).
    """
    results: list[AnsweredRow | None] = [None] * len(questions)
    if workers <= 1:
        for i, question in enumerate(questions):
            results[i] = answer_question(predict, question, traced=traced)
            if on_done:
                on_done(1)
        return _all(results)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragworks-batch") as pool:
        pending: set[Future[tuple[int, AnsweredRow]]] = set()
        for i, question in enumerate(questions):
            if len(pending) >= 2 * workers:  # bounded: a million rows are not a million futures
                pending = _collect(pending, results, on_done)
            pending.add(pool.submit(_indexed, predict, i, question, traced))
        while pending:
            pending = _collect(pending, results, on_done)
    return _all(results)


def _indexed(predict: Predict, i: int, question: object, traced: bool) -> tuple[int, AnsweredRow]:
    return i, answer_question(predict, question, traced=traced)


def _collect(
    pending: set[Future[tuple[int, AnsweredRow]]],
    results: list[AnsweredRow | None],
    on_done: Callable[[int], None] | None,
) -> set[Future[tuple[int, AnsweredRow]]]:
    """Wait for at least one call to finish; store the finished ones and return those still running."""
    done, still = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        i, row = future.result()
        results[i] = row
    if on_done:
        on_done(len(done))
    return still


def _all(results: Iterable[AnsweredRow | None]) -> list[AnsweredRow]:
    rows = list(results)
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:  # cannot happen unless a call was lost; never pass that off as a full batch
        raise RuntimeError(f"{len(missing)} rows got no result (first: row {missing[0]})")
    return [row for row in rows if row is not None]


def final_text(response: Mapping[str, Any]) -> str:
    """The text of the last assistant message of a Responses response; raises if there is none."""
    for item in reversed(response.get("output") or []):
        if isinstance(item, Mapping) and item.get("type") == "message":
            parts = [p.get("text", "") for p in item.get("content") or [] if isinstance(p, Mapping)]
            text = "".join(p for p in parts if isinstance(p, str))
            if text.strip():
                return text
    raise NoAnswerError("the agent's response has no answer text")


def _sources(response: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = (response.get("custom_outputs") or {}).get("sources") or []
    return [s for s in raw if isinstance(s, Mapping)]


def _plain(response: object) -> Mapping[str, Any]:
    dump = getattr(response, "model_dump", None)
    data = dump(exclude_none=True) if callable(dump) else response
    if not isinstance(data, Mapping):
        raise NoAnswerError(f"the agent returned a {type(response).__name__}, not a Responses response")
    return data


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:_MAX_ERROR_CHARS]


def _last_trace_id() -> str | None:
    import mlflow

    # thread_local: the worker pool's threads each see only their own last trace
    return mlflow.get_last_active_trace_id(thread_local=True)


def _new_trace_id(before: str | None, traced: bool) -> str | None:
    """The trace this call produced: the thread's last trace, if it changed during the call."""
    if not traced:
        return None
    after = _last_trace_id()
    return after if after != before else None
