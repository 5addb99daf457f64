"""Span conventions: one explicit MLflow span per retrieval, model call and tool call.

Every request is one trace. The adapters (`RagResponsesAgent`, `RagChatModel`) open the AGENT root;
the graph nodes open children through the helpers here:

    AGENT predict / predict_stream
     ├── RETRIEVER retrieve          outputs: list[mlflow.entities.Document] (doc_uri, chunk_id, id)
     ├── CHAT_MODEL generate         attributes: token usage, model name; outputs: the AI message
     └── TOOL <tool name>            (tool-calling agents; the retriever tool nests a RETRIEVER span)

Spans are made only inside an active trace, and not at all while `mlflow.langchain.autolog` is on:
autolog then traces the same LangChain calls, and doing both would duplicate every span.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import mlflow
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from mlflow.entities import Document as MlflowDocument
from mlflow.entities import LiveSpan, SpanType
from mlflow.tracing.constant import SpanAttributeKey

from ragworks.agents._messages import message_to_dict
from ragworks.agents._streaming import stream_reply

logger = logging.getLogger(__name__)

CONFIG_TAG = "ragworks.config_fingerprint"
AGENT_TAG = "ragworks.agent"


def _autolog_on() -> bool:
    try:
        from mlflow.utils.autologging_utils import autologging_is_disabled

        return not autologging_is_disabled("langchain")
    except Exception:  # an MLflow without this helper: assume autolog is off
        return False


def tracing_active() -> bool:
    """Whether explicit spans should be made now: inside a recorded trace, without langchain autolog."""
    return mlflow.get_current_active_span() is not None and not _autolog_on()


@contextmanager
def child_span(name: str, span_type: str, inputs: dict[str, Any]) -> Iterator[LiveSpan | None]:
    """Open a child span of the current trace, or yield None when no trace is being recorded."""
    if not tracing_active():
        yield None
        return
    with mlflow.start_span(name=name, span_type=span_type) as span:
        span.set_inputs(inputs)
        yield span


def to_mlflow_document(doc: Document) -> MlflowDocument:
    """A LangChain document in MLflow's retriever format: `doc_uri` = source, `chunk_id` = id."""
    metadata = dict(doc.metadata)
    if "source" in metadata:
        metadata.setdefault("doc_uri", str(metadata["source"]))
    if doc.id is not None:
        metadata.setdefault("chunk_id", doc.id)
    return MlflowDocument(page_content=doc.page_content, metadata=metadata, id=doc.id)


def traced_retrieve(
    retriever: BaseRetriever,
    query: str,
    *,
    name: str = "retrieve",
    filters: dict[str, Any] | None = None,
) -> list[Document]:
    """Run a retriever inside a RETRIEVER span whose outputs are MLflow documents.

    `filters` (metadata filters for this query, see `ragworks.retrieval.filters`) are passed to the
    retriever, which adds them to its own.
    """
    inputs: dict[str, Any] = {"query": query, "filters": filters} if filters else {"query": query}
    with child_span(name, SpanType.RETRIEVER, inputs) as span:
        docs = retriever.invoke(query, filters=filters) if filters else retriever.invoke(query)
        if span is not None:
            span.set_outputs([to_mlflow_document(d) for d in docs])
    return docs


def usage_of(message: BaseMessage) -> dict[str, int] | None:
    """Token usage in MLflow's keys, when the backend reported it."""
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return None
    return {k: int(usage.get(k, 0)) for k in ("input_tokens", "output_tokens", "total_tokens")}


def traced_chat(
    llm: Runnable[Any, BaseMessage],
    messages: Sequence[BaseMessage],
    *,
    name: str,
    model: BaseChatModel | None = None,
    tags: list[str] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> AIMessage:
    """Call a chat model inside a CHAT_MODEL span carrying token usage and the model name.

    With `on_text`, the model is streamed and each text piece is passed to it as it arrives.
    """
    with child_span(name, SpanType.CHAT_MODEL, {"messages": [message_to_dict(m) for m in messages]}) as span:
        config: RunnableConfig | None = {"tags": tags} if tags else None
        if on_text is not None:
            result: BaseMessage = stream_reply(llm, messages, on_text=on_text, config=config)
        else:
            result = llm.invoke(list(messages), config=config)
        if not isinstance(result, AIMessage):
            result = AIMessage(content=result.content)
        if span is not None:
            _annotate_chat_span(span, result, model)
    return result


def _annotate_chat_span(span: LiveSpan, result: AIMessage, model: BaseChatModel | None) -> None:
    span.set_outputs(message_to_dict(result))
    usage = usage_of(result)
    if usage:
        span.set_attribute(SpanAttributeKey.CHAT_USAGE, usage)
    model_name = result.response_metadata.get("model_name") or getattr(model, "model_name", None)
    if model_name:
        span.set_attribute(SpanAttributeKey.MODEL, str(model_name))


def traced_tool(tool: BaseTool, call: ToolCall) -> ToolMessage:
    """Run one tool call inside a TOOL span; the tool's exception propagates to the caller."""
    with child_span(call["name"], SpanType.TOOL, {"args": call["args"], "call_id": call.get("id")}) as span:
        result = tool.invoke(call)
        message = (
            result if isinstance(result, ToolMessage) else ToolMessage(str(result), tool_call_id=call["id"])
        )
        if span is not None:
            span.set_outputs({"content": str(message.content)})
    return message


def annotate_trace(
    *, session_id: str | None = None, user_id: str | None = None, tags: dict[str, str] | None = None
) -> None:
    """Put the session, user and config tags on the current trace, if one is being recorded."""
    if mlflow.get_current_active_span() is None:
        return
    try:
        mlflow.update_current_trace(
            tags=tags or None, session_id=session_id, user=user_id, client_request_id=_served_request_id()
        )
    except Exception as exc:  # tracing must never break a request
        logger.debug("Could not annotate the trace: %s", exc)


def _served_request_id() -> str | None:
    """The `x-request-id` of the HTTP request being served (the trace's `client_request_id`), if any.

    Read through MLflow's `get_request_headers()`, which the server sets per request; that module is
    imported only by servers, so elsewhere (eval, the CLI) there is no request and nothing to import.
    """
    server = sys.modules.get("mlflow.genai.agent_server")
    get_headers = getattr(server, "get_request_headers", None)
    if get_headers is None:
        return None
    request_id = get_headers().get("x-request-id")
    return request_id if isinstance(request_id, str) and request_id else None
