"""A scripted chat model for graph and agent tests.

Example:
    >>> from langchain_core.messages import AIMessage
    >>> model = ScriptedChatModel(responses=[
    ...     AIMessage("", tool_calls=[{"name": "search_documents", "args": {"query": "q"}, "id": "c1"}]),
    ...     "The answer [1].",
    ... ])
    >>> model.invoke("hi").tool_calls[0]["name"]
    'search_documents'
    >>> model.invoke("again").content, len(model.history)
    ('The answer [1].', 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import Field, PrivateAttr, field_validator

from ragworks.agents.offline import ReplyStreamingChatModel, word_usage


class ScriptedChatModel(ReplyStreamingChatModel):
    """Returns queued replies in order, records every prompt in `.history`, and streams word chunks."""

    responses: list[AIMessage] = Field(default_factory=list)
    """Replies in order: `AIMessage`s (tool calls included) or plain strings. A reply's own
    `usage_metadata` is reported as given."""
    repeat_last: bool = False
    """Keep returning the last reply once the queue is empty (instead of failing)."""
    usage: bool = True
    """Report word counts as token usage, like a real backend, for replies that carry none."""
    _cursor: int = PrivateAttr(default=0)
    _history: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _tools: list[str] = PrivateAttr(default_factory=list)

    @field_validator("responses", mode="before")
    @classmethod
    def _strings_to_messages(cls, value: Any) -> Any:
        # Any: raw constructor input, validated into AIMessages right after this
        return [AIMessage(r) if isinstance(r, str) else r for r in value]

    @property
    def history(self) -> list[list[BaseMessage]]:
        """The messages of every call, in order."""
        return self._history

    @property
    def bound_tools(self) -> list[str]:
        """Names of the tools passed to `bind_tools`."""
        return self._tools

    @property
    def _llm_type(self) -> str:
        return "ragworks-scripted"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Record the tool names and return this same model, so its queue and history stay shared."""
        self._tools = [getattr(t, "name", getattr(t, "__name__", str(t))) for t in tools]
        return self

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        self._history.append(list(messages))
        if self._cursor >= len(self.responses):
            if not (self.repeat_last and self.responses):
                raise AssertionError(
                    f"ScriptedChatModel ran out of replies after {len(self.responses)} calls."
                )
            self._cursor = len(self.responses) - 1
        reply = self.responses[self._cursor]
        self._cursor += 1
        message = reply.model_copy(deep=True)
        if self.usage and message.usage_metadata is None:
            message.usage_metadata = word_usage(messages, str(message.content))
        return message
