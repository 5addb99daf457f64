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

The workers are threads of `_StreamThreads`: a run takes an idle one or starts one (at most
`MAX_WORKERS`), and one idle for `IDLE_EXIT_S` exits. A burst of streams at once (say, abandoned
streams still finishing beside their replacements) thus leaves no threads behind, where a
`ThreadPoolExecutor` would keep every thread it ever started for the life of the process.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Durability

TEXT_SINK = "ragworks_text_sink"
"""`configurable` key: a `Callable[[str], None]` that answer nodes stream their model's text into."""

MAX_WORKERS = 256
"""Streams running at once per process; threads start only when none is idle, and are reused."""
IDLE_EXIT_S = 0.5
"""Seconds a worker waits for another run before it exits (starting one again costs about 0.1 ms)."""


class _StreamThreads:
    """Reused daemon threads for graph runs, started on demand, leaving when idle (module doc)."""

    def __init__(self, *, max_threads: int, idle_exit_s: float, name: str) -> None:
        self._max, self._idle_exit_s, self._name = max_threads, idle_exit_s, name
        self._cond = threading.Condition()
        self._runs: deque[Callable[[], None]] = deque()
        self._threads = self._idle = self._started = 0

    def submit(self, run: Callable[[], None]) -> None:
        """Run `run()` on an idle worker, or a new one while fewer than `max_threads` run."""
        with self._cond:
            self._runs.append(run)
            if self._idle >= len(self._runs):
                self._cond.notify()
                return
            if self._threads < self._max:
                self._threads += 1
                self._started += 1
                name = f"{self._name}_{self._started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._runs:
                    self._idle += 1
                    self._cond.wait_for(lambda: bool(self._runs), self._idle_exit_s)
                    self._idle -= 1
                if not self._runs:  # idle for the whole wait: leave
                    self._threads -= 1
                    return
                run = self._runs.popleft()
            try:
                run()  # does not raise: `stream_with_text`'s run hands its errors to the reader
            except BaseException:
                with self._cond:
                    self._threads -= 1
                raise


_POOL = _StreamThreads(max_threads=MAX_WORKERS, idle_exit_s=IDLE_EXIT_S, name="ragworks-stream")
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
    graph: CompiledStateGraph,
    inputs: dict[str, Any],
    config: RunnableConfig | None = None,
    *,
    durability: Durability | None = None,
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
            for update in graph.stream(
                inputs, _with_sink(config, sink), stream_mode="updates", durability=durability
            ):
                if left.is_set():
                    return
                pieces.put(("updates", update))
        except _ReaderLeft:
            return
        except BaseException as exc:  # handed to the reader, which raises it
            pieces.put(exc)
            return
        pieces.put(_END)

    context = contextvars.copy_context()
    _POOL.submit(lambda: context.run(run))
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
