"""Stream a graph from a reused worker thread: its updates and the text its answer nodes stream, in order.

Text deltas must reach the caller while a node is still running, so the graph runs on another thread.
LangGraph's concurrent stream modes (`custom`, `messages`) start a thread pool for every run and hand
each chunk across threads through a waiter future; with a fast model that costs several times the
answer itself, and far more on a busy machine. Here one reused worker runs the graph on LangGraph's
inline path (`stream_mode="updates"`) and puts the text pieces (through the `TEXT_SINK` callback in
`configurable`, which answer nodes call) and the updates on one queue, so order is kept and a run costs
one hand-off.

The worker runs in a copy of the caller's context, so MLflow's active span and the request deadline
are the caller's. When the caller stops reading (a client that left), the next text piece or update
stops the run.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

TEXT_SINK = "ragworks_text_sink"
"""`configurable` key: a `Callable[[str], None]` that answer nodes stream their model's text into."""

MAX_WORKERS = 256
"""Streams running at once per process; threads start only when none is idle, and are reused."""

_POOL = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="ragworks-stream")
_END = object()

Piece = tuple[Literal["text", "updates"], Any]
"""("text", str) for a text piece, ("updates", dict) for LangGraph's update of a finished node."""


class _ReaderLeft(Exception):
    """Raised inside the run when nobody reads the stream any more."""


def text_sink(config: RunnableConfig | None) -> Callable[[str], None] | None:
    """The callback a run streams answer text into, or None when the run does not stream text."""
    sink = ((config or {}).get("configurable") or {}).get(TEXT_SINK)
    return sink if callable(sink) else None


def stream_with_text(
    graph: CompiledStateGraph, inputs: dict[str, Any], config: RunnableConfig | None = None
) -> Iterator[Piece]:
    """Run `graph` on a worker thread; yield its answer text pieces and node updates as they happen.

    The run's exception, if any, is raised here, after the pieces that came before it.
    """
    pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()
    left = threading.Event()

    def sink(text: str) -> None:
        if left.is_set():
            raise _ReaderLeft("the stream's reader left")
        pieces.put(("text", text))

    def run() -> None:
        try:
            for update in graph.stream(inputs, _with_sink(config, sink), stream_mode="updates"):
                if left.is_set():
                    return
                pieces.put(("updates", update))
        except _ReaderLeft:
            return
        except BaseException as exc:  # handed to the reader, which raises it
            pieces.put(exc)
            return
        pieces.put(_END)

    _POOL.submit(contextvars.copy_context().run, run)
    try:
        while (piece := pieces.get()) is not _END:
            if isinstance(piece, BaseException):
                raise piece
            yield piece
    finally:
        left.set()


def _with_sink(config: RunnableConfig | None, sink: Callable[[str], None]) -> RunnableConfig:
    """`config` with the text sink added, keeping what the caller configured (a thread id)."""
    merged: RunnableConfig = {**(config or {})}
    merged["configurable"] = {**(merged.get("configurable") or {}), TEXT_SINK: sink}
    return merged
