"""`RagChatModel`: the same graph behind MLflow's chat-completions `ChatModel` interface.

MLflow marks `mlflow.pyfunc.ChatModel` deprecated since 3.0 in favour of `ResponsesAgent`; prefer
`RagResponsesAgent` and use this class only for clients that need the chat-completions schema.

Example:
    >>> model = build_chat_agent({"retriever": {"type": "local", "index": "./index"}})  # doctest: +SKIP
    >>> messages = [ChatMessage(role="user", content="What is ragworks?")]
    >>> model.predict(None, messages, ChatParams())  # doctest: +SKIP
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Generator, Iterator
from typing import Any

import mlflow
from langchain_core.messages.ai import UsageMetadata
from langgraph.graph.state import CompiledStateGraph
from mlflow.entities import SpanType
from mlflow.types.llm import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
    TokenUsageStats,
)

from ragworks.agents._messages import chat_to_messages
from ragworks.agents._run import TextDelta, TextDone, run_graph
from ragworks.agents.tracing import AGENT_TAG, CONFIG_TAG, annotate_trace
from ragworks.config import AgentConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ChatModel's deprecation notice: documented above instead
    from mlflow.pyfunc import ChatModel


def _reduce_chunks(chunks: list[ChatCompletionChunk]) -> dict[str, Any]:
    """Trace output of `predict_stream`: the streamed text and custom outputs."""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    custom = next((c.custom_outputs for c in reversed(chunks) if c.custom_outputs), None)
    return {"content": text, "custom_outputs": custom}


def _token_usage(usage: UsageMetadata | None) -> TokenUsageStats | None:
    """LangChain token usage in chat-completions terms."""
    if usage is None:
        return None
    return TokenUsageStats(
        prompt_tokens=usage["input_tokens"],
        completion_tokens=usage["output_tokens"],
        total_tokens=usage["total_tokens"],
    )


class RagChatModel(ChatModel):
    """A ragworks graph as an MLflow ChatModel (deprecated upstream: prefer `RagResponsesAgent`).

    The request's `params` (temperature, max_tokens) are ignored: the agent's config decides them.
    `params.custom_inputs` may carry `conversation_id` and `user_id` for the trace.
    """

    def __init__(self, graph: CompiledStateGraph, *, config: AgentConfig | None = None) -> None:
        self.graph = graph
        self.config = config
        self.model_name = config.name if config else "ragworks-agent"

    @mlflow.trace(name="predict", span_type=SpanType.AGENT)
    def predict(  # type: ignore[override]  # ChatModel's signature, not PythonModel's
        self, context: Any, messages: list[ChatMessage], params: ChatParams
    ) -> ChatCompletionResponse:
        """Answer a chat; the reduction of `predict_stream`'s chunks (usage: the run's token counts)."""
        text, custom, usage = [], None, None
        for chunk in self._chunks(messages, params, stream=False):
            text.append(chunk.choices[0].delta.content or "")
            custom = chunk.custom_outputs or custom
            usage = chunk.usage or usage
        message = ChatMessage(role="assistant", content="".join(text))
        return ChatCompletionResponse(
            choices=[ChatChoice(message=message)], model=self.model_name, custom_outputs=custom, usage=usage
        )

    @mlflow.trace(name="predict_stream", span_type=SpanType.AGENT, output_reducer=_reduce_chunks)
    def predict_stream(  # type: ignore[override]  # ChatModel's signature, not PythonModel's
        self, context: Any, messages: list[ChatMessage], params: ChatParams
    ) -> Generator[ChatCompletionChunk, None, None]:
        """Stream the answer as chat-completion chunks; the last one carries the sources and usage."""
        yield from self._chunks(messages, params)

    def _chunks(
        self, messages: list[ChatMessage], params: ChatParams, *, stream: bool = True
    ) -> Iterator[ChatCompletionChunk]:
        self._annotate(params)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        items = [m.to_dict() for m in messages]
        texts_done = 0
        for event in run_graph(self.graph, chat_to_messages(items), stream=stream):
            if isinstance(event, TextDelta):
                # separate the texts of successive assistant messages (tool-calling agents)
                prefix = "\n\n" if texts_done else ""
                texts_done = 0
                yield self._chunk(completion_id, prefix + event.delta)
            elif isinstance(event, TextDone):
                texts_done += bool(event.text)
                if event.final:
                    custom = {"sources": event.sources}
                    usage = _token_usage(event.usage)
                    yield self._chunk(
                        completion_id, "", finish_reason="stop", custom_outputs=custom, usage=usage
                    )

    def _chunk(self, completion_id: str, text: str, **kwargs: Any) -> ChatCompletionChunk:
        choice = ChatChunkChoice(
            delta=ChatChoiceDelta(role="assistant", content=text),
            finish_reason=kwargs.pop("finish_reason", None),
        )
        return ChatCompletionChunk(choices=[choice], id=completion_id, model=self.model_name, **kwargs)

    def _annotate(self, params: ChatParams) -> None:
        custom = (params.custom_inputs or {}) if params else {}
        tags = {CONFIG_TAG: self.config.fingerprint(), AGENT_TAG: self.config.agent} if self.config else None
        annotate_trace(session_id=custom.get("conversation_id"), user_id=custom.get("user_id"), tags=tags)
