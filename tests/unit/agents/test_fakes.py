"""The scripted chat model used by graph tests."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from ragworks.testing import ScriptedChatModel


def test_replies_in_order_records_history_and_streams_words() -> None:
    call = AIMessage("", tool_calls=[{"name": "search_documents", "args": {"query": "q"}, "id": "c1"}])
    model = ScriptedChatModel(responses=[call, "The answer is here [1]."])
    assert model.bind_tools([]) is model
    assert model.invoke([HumanMessage("first")]).tool_calls[0]["id"] == "c1"
    chunks = list(model.stream([HumanMessage("second")]))
    assert [c.content for c in chunks if c.content] == ["The ", "answer ", "is ", "here ", "[1]."]
    assert [h[-1].content for h in model.history] == ["first", "second"]
    with pytest.raises(AssertionError, match="ran out of replies"):
        model.invoke("third")


def test_repeat_last_and_usage() -> None:
    model = ScriptedChatModel(responses=["again"], repeat_last=True)
    replies = [model.invoke("one two") for _ in range(3)]
    assert [r.content for r in replies] == ["again"] * 3
    assert replies[0].usage_metadata == {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}


def test_a_reply_with_its_own_usage_reports_it_invoked_and_streamed() -> None:
    usage = {"input_tokens": 100, "output_tokens": 2, "total_tokens": 102}
    model = ScriptedChatModel(responses=[AIMessage("Two words.", usage_metadata=usage)], repeat_last=True)
    assert model.invoke("one two three").usage_metadata == usage
    streamed = None
    for chunk in model.stream("one two three"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and streamed.usage_metadata == usage
