"""Rows of `ragworks batch`: a failure is an error, never an answer; the pool keeps order and its bound."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from ragworks.scale._batch_rows import answer_all, answer_question, final_text


def _response(text: str, sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    item = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    return {"output": [item], "custom_outputs": {"sources": sources or []}}


def test_an_answer_carries_its_sources() -> None:
    sources = [{"id": "c1", "source": "docs/a.md"}, {"id": "c2", "source": "docs/b.md"}]
    row = answer_question(lambda request: _response("It is a folder [1].", sources), "Where?", traced=False)
    assert row.answer == "It is a folder [1]." and row.error is None
    assert row.sources == ["docs/a.md", "docs/b.md"] and row.source_ids == ["c1", "c2"]
    assert row.latency_s >= 0 and row.trace_id is None


@pytest.mark.parametrize(
    ("predict", "error"),
    [
        (
            lambda request: (_ for _ in ()).throw(TimeoutError("model timed out")),
            "TimeoutError: model timed out",
        ),
        (lambda request: _response("   "), "no answer text"),
        (lambda request: {"output": [{"type": "function_call", "name": "x"}]}, "no answer text"),
        (lambda request: "plain text", "not a Responses response"),
    ],
)
def test_a_failed_call_is_an_error_with_an_empty_answer(predict: Any, error: str) -> None:
    row = answer_question(predict, "Where?", traced=False)
    assert row.answer == "" and row.sources == [] and row.error is not None and error in row.error


@pytest.mark.parametrize("question", [None, "", "  ", 3.5])
def test_an_empty_question_is_never_asked(question: object) -> None:
    calls: list[object] = []
    row = answer_question(lambda request: calls.append(request) or _response("x"), question, traced=False)
    assert calls == [] and row.error is not None and "empty or not text" in row.error


def test_the_last_message_is_the_answer() -> None:
    first = _response("thinking")["output"][0]
    assert final_text({"output": [first, *_response("final")["output"]]}) == "final"


def test_the_pool_keeps_order_and_its_bound() -> None:
    running, most, lock = [0], [0], threading.Lock()

    def predict(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(random.uniform(0, 0.01))  # finish out of order
        with lock:
            running[0] -= 1
        question = request["input"][0]["content"]
        if question.endswith("7"):
            raise RuntimeError("boom")
        return _response(f"answer to {question}")

    done: list[int] = []
    rows = answer_all(predict, [f"q{i}" for i in range(60)], workers=4, traced=False, on_done=done.append)
    assert [r.answer for r in rows] == ["" if i % 10 == 7 else f"answer to q{i}" for i in range(60)]
    assert [i for i, r in enumerate(rows) if r.error] == [7, 17, 27, 37, 47, 57]
    assert 1 < most[0] <= 4 and sum(done) == 60
