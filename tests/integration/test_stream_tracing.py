"""Traces of streamed runs in a temp SQLite MLflow store: one CHAT_MODEL span per model call, with usage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
from langchain_core.messages import AIMessage
from langchain_core.messages.ai import UsageMetadata
from mlflow.entities import SpanType, Trace
from mlflow.tracing.constant import SpanAttributeKey

from ragworks.agents import RagResponsesAgent
from ragworks.agents.graphs import build_rag_graph, build_tool_agent
from ragworks.retrieval import get_retriever
from ragworks.testing import ScriptedChatModel
from ragworks.tools import make_retriever_tool

FOLLOW_UP = {
    "input": [
        {"role": "user", "content": "How does ragworks store the index?"},
        {"role": "assistant", "content": "In a folder [1]."},
        {"role": "user", "content": "Does it use pickle?"},
    ]
}


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temp SQLite store with every trace sampled."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    mlflow.tracing.reset()  # pick up the store and the sampling ratio
    yield
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


def _usage(n_in: int, n_out: int) -> UsageMetadata:
    return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}


def _last_trace() -> Trace:
    trace_id = mlflow.get_last_active_trace_id()
    assert trace_id is not None
    trace = mlflow.get_trace(trace_id, flush=True)
    assert trace is not None
    return trace


def _chat_usages(trace: Trace) -> dict[str, Any]:
    spans = trace.search_spans(span_type=SpanType.CHAT_MODEL)
    return {span.name: span.get_attribute(SpanAttributeKey.CHAT_USAGE) for span in spans}


@pytest.mark.usefixtures("tracking")
def test_streamed_rag_run_has_a_chat_model_span_per_call_with_usage(docs_index: str) -> None:
    rewrite, answer = _usage(40, 3), _usage(300, 7)
    model = ScriptedChatModel(
        responses=[
            AIMessage("ragworks index pickle", usage_metadata=rewrite),
            AIMessage("No, it never uses pickle [1].", usage_metadata=answer),
        ]
    )
    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    agent = RagResponsesAgent(build_rag_graph(retriever, model, condense="llm"))
    events = [e.model_dump(exclude_none=True) for e in agent.predict_stream(FOLLOW_UP)]
    trace = _last_trace()
    root = trace.data.spans[0]
    assert root.parent_id is None and root.span_type == SpanType.AGENT
    assert _chat_usages(trace) == {"condense_question": rewrite, "generate": answer}
    (generate,) = [s for s in trace.search_spans(span_type=SpanType.CHAT_MODEL) if s.name == "generate"]
    assert generate.outputs["content"] == "No, it never uses pickle [1]."
    assert trace.info.token_usage == {"input_tokens": 340, "output_tokens": 10, "total_tokens": 350}
    final = [e for e in events if e["type"] == "response.output_item.done"][-1]
    assert final["usage"]["total_tokens"] == 350
    assert root.outputs["usage"]["total_tokens"] == 350  # the trace's output is the reduced response


@pytest.mark.usefixtures("tracking")
def test_streamed_tool_run_traces_each_model_call_and_the_tool(docs_index: str) -> None:
    first, second = _usage(120, 4), _usage(500, 8)
    call = {"name": "search_documents", "args": {"query": "index storage"}, "id": "call_1"}
    model = ScriptedChatModel(
        responses=[
            AIMessage("", tool_calls=[call], usage_metadata=first),
            AIMessage("It is stored in a folder [1].", usage_metadata=second),
        ]
    )
    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    agent = RagResponsesAgent(build_tool_agent(model, [make_retriever_tool(retriever)]))
    list(agent.predict_stream({"input": [{"role": "user", "content": "Where is the index stored?"}]}))
    trace = _last_trace()
    chat = trace.search_spans(span_type=SpanType.CHAT_MODEL)
    assert [s.get_attribute(SpanAttributeKey.CHAT_USAGE) for s in chat] == [first, second]
    assert chat[0].outputs["tool_calls"][0]["function"]["name"] == "search_documents"
    assert [s.name for s in trace.search_spans(span_type=SpanType.TOOL)] == ["search_documents"]
    assert trace.info.token_usage == {"input_tokens": 620, "output_tokens": 12, "total_tokens": 632}


@pytest.mark.usefixtures("tracking")
def test_streamed_run_under_langchain_autolog_has_one_chat_model_span_with_usage(docs_index: str) -> None:
    answer = _usage(30, 5)
    model = ScriptedChatModel(responses=[AIMessage("It is a folder [1].", usage_metadata=answer)])
    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    agent = RagResponsesAgent(build_rag_graph(retriever, model, condense="none"))
    mlflow.langchain.autolog()
    try:
        list(agent.predict_stream({"input": [{"role": "user", "content": "Where is the index?"}]}))
    finally:
        mlflow.langchain.autolog(disable=True)
    trace = _last_trace()
    assert trace.data.spans[0].span_type == SpanType.AGENT
    chat = trace.search_spans(span_type=SpanType.CHAT_MODEL)
    # autolog traces the model's stream; our own span stays off, so the call is not traced twice
    assert [s.get_attribute(SpanAttributeKey.CHAT_USAGE) for s in chat] == [answer]
    assert trace.info.token_usage == answer
