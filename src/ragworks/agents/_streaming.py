"""What answer nodes write to LangGraph's `custom` stream, and how a model reply is streamed.

Answer nodes stream the chat model themselves (`model.stream` inside the node) and write each text
piece as a `TextChunk` through the node's stream writer. `run_graph` reads them with
`stream_mode=["custom", "updates"]`, so token deltas skip LangGraph's `messages` callback machinery,
which costs about ten times the answer itself with a fast model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    message_chunk_to_message,
)
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.runnables import Runnable, RunnableConfig

from ragworks.agents._messages import content_text

STREAM_TEXT = "ragworks_stream_text"
"""`configurable` key: when true, answer nodes stream their model and write `TextChunk`s."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TextChunk:
    """A piece of answer text, written to the `custom` stream as the model produces it."""

    delta: str


def streaming_requested(config: RunnableConfig | None) -> bool:
    """Whether the run asked answer nodes to stream their text (see `STREAM_TEXT`)."""
    return bool(((config or {}).get("configurable") or {}).get(STREAM_TEXT))


def stream_reply(
    llm: Runnable[Any, BaseMessage],
    messages: Sequence[BaseMessage],
    *,
    on_text: Callable[[str], None],
    config: RunnableConfig | None = None,
) -> AIMessage:
    """Stream a chat model, pass each text piece to `on_text`, and return the whole reply.

    The chunks are added up as LangChain adds them, so tool-call chunks become the reply's
    `tool_calls` and the usage of the last chunk its `usage_metadata`.
    """
    total: BaseMessageChunk | None = None
    for chunk in llm.stream(list(messages), config=config):
        piece = cast(BaseMessageChunk, chunk)  # a chat model streams message chunks
        text = content_text(piece.content)
        if text:
            on_text(text)
        total = piece if total is None else total + piece
    if total is None:
        return AIMessage(content="")
    message = message_chunk_to_message(total) if isinstance(total, AIMessageChunk) else total
    return message if isinstance(message, AIMessage) else AIMessage(content=message.content)


def sum_usage(left: UsageMetadata | None, right: UsageMetadata | None) -> UsageMetadata | None:
    """The sum of two usages; None only when neither side reported any."""
    if left is None and right is None:
        return None
    return add_usage(left, right)
