"""One run of a graph as a stream of neutral events; both MLflow adapters map these events.

Text deltas are the pieces answer nodes pass to the run's text sink as they stream their model
(see `_worker`); finished messages, tool calls, tool results and documents come from LangGraph's
`updates`. Invariant: for every text item, the concatenated deltas equal the finished text. The
final `TextDone` carries the token usage summed over the run's model calls.

With `stream=False` the graph runs in the caller's thread (`stream_mode="updates"`) and answer
nodes invoke their model once instead of streaming it: the same events, each text as a single
delta (what non-streaming `predict` and `/invocations` want). Either way deltas never pass
through LangGraph's `messages` mode, whose per-token callbacks cost far more than a fast model's
answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Durability

from ragworks.agents._messages import message_text
from ragworks.agents._streaming import sum_usage
from ragworks.agents._worker import Piece, stream_with_text
from ragworks.agents.prompts import cited_numbers, source_name

SNIPPET_CHARS = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """A piece of assistant text, as the model streams it."""

    item_id: str
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDone:
    """A finished assistant text; `final` marks the answer that ends the run (it carries the sources
    and the token usage of all the run's model calls, None when no model reported usage)."""

    item_id: str
    text: str
    final: bool = False
    sources: list[dict[str, Any]] = field(default_factory=list)
    usage: UsageMetadata | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallEvent:
    """The model asked for a tool."""

    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResultEvent:
    """A tool's output (or its error text)."""

    call_id: str
    output: str


AgentEvent = TextDelta | TextDone | ToolCallEvent | ToolResultEvent


def new_item_id(prefix: str = "msg") -> str:
    """A fresh id for a Responses output item."""
    return f"{prefix}_{uuid.uuid4().hex}"


def sources_payload(docs: Sequence[Document], answer: str) -> list[dict[str, Any]]:
    """The sources shown to the model, numbered as in the prompt; `cited` if the answer cites them."""
    cited = cited_numbers(answer)
    return [
        {
            "n": n,
            "id": doc.id,
            "source": source_name(doc),
            "chunk_index": doc.metadata.get("chunk_index"),  # tells one file's chunks apart
            "score": doc.metadata.get("score"),
            "snippet": doc.page_content[:SNIPPET_CHARS],
            "cited": n in cited,
        }
        for n, doc in enumerate(docs, start=1)
    ]


@dataclass(slots=True)
class _Run:
    documents: list[Document] = field(default_factory=list)
    streamed: dict[str, str] = field(default_factory=dict)
    """Text streamed so far per message id."""
    items: dict[str, str] = field(default_factory=dict)
    """Output item id per message id."""
    open_key: str | None = None
    usage: UsageMetadata | None = None

    def delta(self, text: str) -> TextDelta | None:
        if not text:
            return None
        # a node streams one message at a time, and its update ends it: so one key per open message
        key = self.open_key = self.open_key or new_item_id("stream")
        self.streamed[key] = self.streamed.get(key, "") + text
        return TextDelta(item_id=self.items.setdefault(key, new_item_id()), delta=text)

    def finish(self, message: AIMessage) -> Iterator[AgentEvent]:
        key = message.id if message.id in self.streamed else self.open_key
        self.open_key = None
        streamed = self.streamed.pop(key, "") if key else ""
        item_id = self.items.pop(key, None) if key else None
        item_id = item_id or new_item_id()
        text = message_text(message)
        if text.startswith(streamed) and text != streamed:
            yield TextDelta(item_id=item_id, delta=text[len(streamed) :])
        elif not text.startswith(streamed):
            text = streamed  # the stream is what the client saw
        self.usage = sum_usage(self.usage, message.usage_metadata)
        final = not message.tool_calls
        if text or final:
            sources = sources_payload(self.documents, text) if final else []
            usage = self.usage if final else None
            yield TextDone(item_id=item_id, text=text, final=final, sources=sources, usage=usage)
        for call in message.tool_calls:
            yield ToolCallEvent(
                item_id=new_item_id("fc"),
                call_id=str(call["id"]),
                name=call["name"],
                arguments=json.dumps(call["args"]),
            )


def run_graph(
    graph: CompiledStateGraph,
    messages: list[BaseMessage],
    *,
    config: RunnableConfig | None = None,
    stream: bool = True,
    inputs: dict[str, Any] | None = None,
    durability: Durability | None = None,
) -> Iterator[AgentEvent]:
    """Run `graph` on a conversation and yield its events; the last one is the final `TextDone`.

    `inputs` replaces the graph input `{"messages": messages}` (a turn of a checkpointed thread), and
    `durability` is LangGraph's, for graphs compiled with a checkpointer.
    """
    run = _Run()
    inputs = inputs if inputs is not None else {"messages": messages}
    pieces: Iterator[Piece]
    if stream:
        pieces = stream_with_text(graph, inputs, config, durability=durability)
    else:
        updates = graph.stream(inputs, config, stream_mode="updates", durability=durability)
        pieces = (("updates", u) for u in updates)
    for kind, payload in pieces:
        if kind == "text":
            delta = run.delta(payload)
            if delta is not None:
                yield delta
            continue
        for update in cast(dict[str, Any], payload).values():
            yield from _update_events(run, update or {})


def _update_events(run: _Run, update: dict[str, Any]) -> Iterator[AgentEvent]:
    run.documents.extend(update.get("documents") or [])
    run.usage = sum_usage(run.usage, update.get("usage"))
    for message in update.get("messages") or []:
        if isinstance(message, AIMessage):
            yield from run.finish(message)
        elif isinstance(message, ToolMessage):
            yield ToolResultEvent(call_id=message.tool_call_id, output=message_text(message))
