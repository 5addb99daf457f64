"""Traces of real agent runs in a temp SQLite MLflow store: span types, documents, usage, session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.entities import SpanType, Trace
from mlflow.genai.utils.trace_utils import extract_retrieval_context_from_trace
from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey
from mlflow.types.llm import ChatMessage, ChatParams

from ragworks.agents import build_agent
from ragworks.agents.builder import build_chat_agent
from ragworks.agents.tracing import CONFIG_TAG
from ragworks.config import AgentConfig


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temp SQLite store with every trace sampled; the default experiment, so no state leaks."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    mlflow.tracing.reset()  # pick up the store and the sampling ratio
    yield
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


def _config(index: str, **kwargs: Any) -> AgentConfig:
    return AgentConfig(retriever={"type": "local", "index": index, "k": 2}, **kwargs)


def _last_trace() -> Trace:
    trace_id = mlflow.get_last_active_trace_id()
    assert trace_id is not None
    trace = mlflow.get_trace(trace_id, flush=True)
    assert trace is not None
    return trace


def _types(trace: Trace) -> list[str]:
    return [span.span_type for span in trace.data.spans]


REQUEST = {
    "input": [{"role": "user", "content": "How are logged agents loaded back?"}],
    "context": {"conversation_id": "conv-42", "user_id": "ada"},
}


@pytest.mark.usefixtures("tracking")
def test_rag_trace_has_agent_retriever_and_chat_model_spans(docs_index: str) -> None:
    config = _config(docs_index)
    build_agent(config).predict(REQUEST)
    trace = _last_trace()
    root = trace.data.spans[0]
    assert root.parent_id is None and root.span_type == SpanType.AGENT
    assert sorted(_types(trace)) == sorted([SpanType.AGENT, SpanType.RETRIEVER, SpanType.CHAT_MODEL])

    (retriever,) = trace.search_spans(span_type=SpanType.RETRIEVER)
    doc = retriever.outputs[0]
    assert {"page_content", "metadata", "id"} <= doc.keys()
    assert doc["metadata"]["doc_uri"].endswith(".md") and doc["metadata"]["chunk_id"] == doc["id"]
    (context,) = extract_retrieval_context_from_trace(trace).values()
    assert context[0]["content"] and context[0]["doc_uri"].endswith(".md")

    (chat,) = trace.search_spans(span_type=SpanType.CHAT_MODEL)
    assert chat.get_attribute(SpanAttributeKey.CHAT_USAGE)["output_tokens"] > 0

    metadata = trace.info.trace_metadata
    assert metadata[TraceMetadataKey.TRACE_SESSION] == "conv-42"
    assert metadata[TraceMetadataKey.TRACE_USER] == "ada"
    assert trace.info.tags[CONFIG_TAG] == config.fingerprint()


@pytest.mark.usefixtures("tracking")
def test_stream_trace_is_one_agent_span_with_sources(docs_index: str) -> None:
    list(build_agent(_config(docs_index)).predict_stream(REQUEST))
    trace = _last_trace()
    assert _types(trace).count(SpanType.AGENT) == 1
    outputs = trace.data.spans[0].outputs
    assert outputs["custom_outputs"]["sources"] and outputs["output"][0]["type"] == "message"


@pytest.mark.usefixtures("tracking")
def test_tool_calling_trace_has_tool_spans_around_retrieval(docs_index: str) -> None:
    build_agent(_config(docs_index, agent="tool-calling")).predict(REQUEST)
    trace = _last_trace()
    (tool,) = trace.search_spans(span_type=SpanType.TOOL)
    (retriever,) = trace.search_spans(span_type=SpanType.RETRIEVER)
    assert tool.name == "search_documents" and retriever.parent_id == tool.span_id
    assert len(trace.search_spans(span_type=SpanType.CHAT_MODEL)) == 2
    assert extract_retrieval_context_from_trace(trace)


@pytest.mark.usefixtures("tracking")
def test_chat_model_trace(docs_index: str, tmp_path: Path) -> None:
    model = build_chat_agent(_config(docs_index))
    params = ChatParams(custom_inputs={"conversation_id": "conv-7"})
    model.predict(None, [ChatMessage(role="user", content="How does ragworks store the index?")], params)
    trace = _last_trace()
    assert trace.data.spans[0].span_type == SpanType.AGENT
    assert SpanType.RETRIEVER in _types(trace)
    assert trace.info.trace_metadata[TraceMetadataKey.TRACE_SESSION] == "conv-7"


@pytest.mark.usefixtures("tracking")
def test_mlflow_retrieval_groundedness_reads_our_retrieved_context(
    docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from mlflow.genai.scorers import RetrievalGroundedness

    from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

    build_agent(_config(docs_index)).predict(REQUEST)
    trace = _last_trace()
    (retriever,) = trace.search_spans(span_type=SpanType.RETRIEVER)
    chunk_text = retriever.outputs[0]["page_content"]

    def grounded(body: dict[str, Any]) -> StubReply:
        return StubReply(content=json.dumps({"result": "yes", "rationale": "Every claim is in the context."}))

    with OpenAIStub(responder=grounded) as judge:
        monkeypatch.setenv("OPENAI_BASE_URL", judge.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "stub-key")
        monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")  # no price lookups over the network
        feedback = RetrievalGroundedness(model="openai:/judge-model")(trace=trace)
    feedbacks = feedback if isinstance(feedback, list) else [feedback]
    assert feedbacks and all(f.error is None and f.value == "yes" for f in feedbacks)
    prompts = " ".join(str(m.get("content")) for r in judge.requests for m in r.body["messages"])
    # The judge saw the text our RETRIEVER span returned: MLflow found the context with no glue.
    assert chunk_text.split("\n")[0][:40] in prompts
