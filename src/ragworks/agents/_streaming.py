"""How an answer node streams its model, and how token usage adds up.

Answer nodes stream the chat model themselves (`model.stream` inside the node) and pass each text
piece to the run's text sink (see `_worker`), so token deltas skip LangGraph's `messages` callback
machinery, which costs about ten times the answer itself with a fast model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
