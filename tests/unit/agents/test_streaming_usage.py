"""Streaming through LangGraph's custom stream mode, and token usage summed over a run's model calls."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from mlflow.types.llm import ChatMessage, ChatParams
from pydantic import Field

from ragworks.agents import RagChatModel, RagResponsesAgent, deadline
from ragworks.agents.graphs import build_rag_graph, build_tool_agent
from ragworks.agents.offline import OfflineChatModel
from ragworks.errors import ModelError
from ragworks.retrieval import get_retriever
from ragworks.testing import ScriptedChatModel
from ragworks.tools import make_retriever_tool

pytestmark = pytest.mark.usefixtures("tracing_off")

QUESTION = {"input": [{"role": "user", "content": "How does ragworks store the index?"}]}
FOLLOW_UP = {
    "input": [
        {"role": "user", "content": "How does ragworks store the index?"},
        {"role": "assistant", "content": "In a folder [1]."},
        {"role": "user", "content": "Does it use pickle?"},
    ]
}


def _usage(n_in: int, n_out: int) -> UsageMetadata:
    return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}


def _reply(text: str, usage: UsageMetadata, **kwargs: Any) -> AIMessage:
    return AIMessage(text, usage_metadata=usage, **kwargs)


def _expected(*usages: UsageMetadata) -> dict[str, Any]:
    n_in = sum(u["input_tokens"] for u in usages)
    n_out = sum(u["output_tokens"] for u in usages)
    return {
        "input_tokens": n_in,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n_in + n_out,
    }


def _rag_agent(index: str, model: ScriptedChatModel, **kwargs: Any) -> RagResponsesAgent:
    retriever = get_retriever({"type": "local", "index": index, "k": 2})
    return RagResponsesAgent(build_rag_graph(retriever, model, **kwargs))


def _events(agent: RagResponsesAgent, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [e.model_dump(exclude_none=True) for e in agent.predict_stream(request)]


def _final_done(events: list[dict[str, Any]]) -> dict[str, Any]:
    return [e for e in events if e["type"] == "response.output_item.done"][-1]


def test_usage_is_the_sum_of_every_model_call_in_predict_and_stream(docs_index: str) -> None:
    rewrite, answer = _usage(40, 6), _usage(300, 9)
    replies = [
        _reply("ragworks index pickle", rewrite),
        _reply("No, it never uses pickle [1].", answer),
    ]
    model = ScriptedChatModel(responses=replies * 2)
    agent = _rag_agent(docs_index, model, condense="llm")
    predicted = agent.predict(FOLLOW_UP)
    assert predicted.usage is not None
    assert predicted.usage.model_dump() == _expected(rewrite, answer)
    done = _final_done(_events(agent, FOLLOW_UP))
    assert done["usage"] == _expected(rewrite, answer)
    assert len(model.history) == 4  # two model calls per run, each counted once


def test_stream_deltas_concatenate_to_the_final_text_and_predict_agrees(docs_index: str) -> None:
    model = ScriptedChatModel(responses=["It is a folder of files [1]."], repeat_last=True)
    agent = _rag_agent(docs_index, model, condense="none")
    events = _events(agent, QUESTION)
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    done = _final_done(events)
    assert len(deltas) > 1
    assert "".join(d["delta"] for d in deltas) == done["item"]["content"][0]["text"]
    assert {d["item_id"] for d in deltas} == {done["item"]["id"]}
    predicted = agent.predict(QUESTION)
    assert predicted.output[-1].content[0]["text"] == done["item"]["content"][0]["text"]
    # word counts of the prompt and the reply, the same in both paths
    assert predicted.usage is not None and predicted.usage.model_dump() == done["usage"]
    assert done["usage"]["output_tokens"] == 7


def test_stream_uses_only_langgraph_updates_mode(docs_index: str) -> None:
    """Deltas skip LangGraph's concurrent stream modes (messages, custom): a thread pool per run."""
    model = ScriptedChatModel(responses=["It is a folder [1]."], repeat_last=True)
    agent = _rag_agent(docs_index, model, condense="none")
    modes: list[Any] = []
    original = agent.graph.stream

    def spy(*args: Any, **kwargs: Any) -> Any:
        modes.append(kwargs["stream_mode"])
        return original(*args, **kwargs)

    agent.graph.stream = spy  # type: ignore[method-assign]  # record the modes of each run
    deltas = [e for e in agent.predict_stream(QUESTION) if e.type == "response.output_text.delta"]
    agent.predict(QUESTION)
    assert len(deltas) > 1 and modes == ["updates", "updates"]


class _SlowStream(ScriptedChatModel):
    """Streams words until told to stop; records how many it produced."""

    produced: int = 0

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for _ in range(10_000):
            self.produced += 1
            time.sleep(0.001)
            yield ChatGenerationChunk(message=AIMessageChunk(content="word "))


def test_a_reader_that_leaves_stops_the_model(docs_index: str) -> None:
    model = _SlowStream(responses=["unused"])
    agent = _rag_agent(docs_index, model, condense="none")
    stream = agent.predict_stream(QUESTION)
    first = [next(stream) for _ in range(3)]
    assert all(e.type == "response.output_text.delta" for e in first)
    stream.close()
    time.sleep(0.2)  # the worker notices at its next piece
    stopped_at = model.produced
    time.sleep(0.2)
    assert model.produced == stopped_at < 1000


def test_tool_calling_stream_aggregates_tool_call_chunks(docs_index: str) -> None:
    first, second = _usage(120, 4), _usage(500, 8)
    call = {"name": "search_documents", "args": {"query": "index storage"}, "id": "call_1"}
    replies = [
        _reply("Let me search.", first, tool_calls=[call]),
        _reply("It is stored in a folder [1].", second),
    ]
    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    model = ScriptedChatModel(responses=replies * 2)
    agent = RagResponsesAgent(build_tool_agent(model, [make_retriever_tool(retriever)]))
    events = _events(agent, QUESTION)
    items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output", "message"]
    assert items[1]["name"] == "search_documents" and items[1]["call_id"] == "call_1"
    assert json.loads(items[1]["arguments"]) == {"query": "index storage"}
    for message in (items[0], items[3]):
        streamed = [e["delta"] for e in events if e.get("item_id") == message["id"] and "delta" in e]
        assert "".join(streamed) == message["content"][0]["text"]
    assert _final_done(events)["usage"] == _expected(first, second)
    predicted = agent.predict(QUESTION)
    assert [i.type for i in predicted.output] == [i["type"] for i in items]
    assert predicted.usage is not None and predicted.usage.model_dump() == _expected(first, second)


def test_no_usage_field_when_the_model_reports_none(docs_index: str) -> None:
    model = ScriptedChatModel(responses=["It is a folder [1]."], repeat_last=True, usage=False)
    agent = _rag_agent(docs_index, model, condense="none")
    assert agent.predict(QUESTION).usage is None
    assert "usage" not in _final_done(_events(agent, QUESTION))


def test_offline_model_reports_usage_for_tool_calls_and_answers(docs_index: str) -> None:
    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    agent = RagResponsesAgent(build_tool_agent(OfflineChatModel(), [make_retriever_tool(retriever)]))
    predicted = agent.predict(QUESTION)
    assert [i.type for i in predicted.output] == ["function_call", "function_call_output", "message"]
    streamed = _final_done(_events(agent, QUESTION))["usage"]
    assert predicted.usage is not None and predicted.usage.model_dump() == streamed
    call = OfflineChatModel().bind_tools([make_retriever_tool(retriever)]).invoke([HumanMessage("index?")])
    assert call.tool_calls and call.usage_metadata and call.usage_metadata["output_tokens"] > 0
    # the tool call's reply words are counted next to the answer's
    assert streamed["output_tokens"] > call.usage_metadata["output_tokens"]


def test_chat_model_usage_in_response_and_last_chunk(docs_index: str) -> None:
    answer = _usage(250, 7)
    model = ScriptedChatModel(responses=[_reply("It is a folder of files [1].", answer)] * 2)
    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    chat = RagChatModel(build_rag_graph(retriever, model, condense="none"))
    messages = [ChatMessage(role="user", content="How does ragworks store the index?")]
    response = chat.predict(None, messages, ChatParams())
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (250, 7)
    assert response.usage.total_tokens == 257
    chunks = list(chat.predict_stream(None, messages, ChatParams()))
    assert chunks[-1].usage == response.usage
    assert all(c.usage is None for c in chunks[:-1])


class _FailingStream(ScriptedChatModel):
    """Streams two words, then fails as a dropped connection would."""

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="It "))
        yield ChatGenerationChunk(message=AIMessageChunk(content="is "))
        raise ModelError("The model connection was lost mid-answer; retry the request.")


def test_a_model_failing_mid_stream_ends_the_stream_with_the_error(docs_index: str) -> None:
    agent = _rag_agent(docs_index, _FailingStream(responses=["unused"]), condense="none")
    seen: list[dict[str, Any]] = []
    with pytest.raises(ModelError, match="lost mid-answer"):
        for event in agent.predict_stream(QUESTION):
            seen.append(event.model_dump(exclude_none=True))
    assert [e["delta"] for e in seen if "delta" in e] == ["It ", "is "]
    assert not [e for e in seen if e["type"] == "response.output_item.done"]


class _DeadlineReader(ScriptedChatModel):
    """Records the request deadline the model sees while it streams."""

    seen: list[float | None] = Field(default_factory=list)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        self.seen.append(deadline.remaining())
        return super()._stream(*args, **kwargs)


def test_the_streaming_model_sees_the_request_deadline(docs_index: str) -> None:
    model = _DeadlineReader(responses=["It is a folder [1]."])
    agent = _rag_agent(docs_index, model, condense="none")
    with deadline.request_deadline(30.0):
        text = "".join(e.delta for e in agent.predict_stream(QUESTION) if e.type.endswith(".delta"))
    assert text == "It is a folder [1]."
    (left,) = model.seen
    assert left is not None and 0 < left <= 30.0
