"""Run a synchronous ResponsesAgent from the event loop: worker threads, a deadline, and cancellation.

`predict` and `predict_stream` block (retrieval, model calls), so they run on a thread pool sized to the
concurrency limit; the caller's context variables (the active MLflow span) travel with them. A stream's
events cross back to the loop in batches, so a fast model does not pay one loop wake-up per token.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse


class AgentRunner:
    """Call one agent from async code, `workers` requests at a time."""

    def __init__(self, agent: ResponsesAgent, *, workers: int) -> None:
        self.agent = agent
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragworks-agent")

    async def predict(self, request: ResponsesAgentRequest, *, timeout: float) -> ResponsesAgentResponse:
        """The agent's answer; TimeoutError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        future = loop.run_in_executor(self._pool, context.run, self.agent.predict, request)
        return await asyncio.wait_for(future, timeout)

    async def stream(self, request: ResponsesAgentRequest, *, timeout: float) -> AsyncIterator[Any]:
        """The agent's stream events; TimeoutError when the whole stream takes longer than `timeout`."""
        loop = asyncio.get_running_loop()
        feed = _Feed(loop)
        context = contextvars.copy_context()
        loop.run_in_executor(self._pool, context.run, _produce, self.agent.predict_stream, request, feed)
        timer = loop.call_later(timeout, feed.expire)
        try:
            while True:
                batch, done = await feed.take()
                for event in batch:
                    yield event
                if done:
                    break
        finally:
            timer.cancel()
            feed.cancelled.set()

    def close(self) -> None:
        """Stop taking work; running calls finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Feed:
    """Events from a worker thread to the loop: a locked list plus one wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._signalled = False
        self._done = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()
        self.cancelled = threading.Event()

    def put(self, item: Any) -> None:
        """Add an event (worker thread)."""
        with self._lock:
            self._items.append(item)
            self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        """Mark the stream done, with the error that ended it if any (worker thread)."""
        with self._lock:
            if not self._done:
                self._done, self._error = True, error
            self._wake()

    def expire(self) -> None:
        """The deadline passed (event loop)."""
        self.cancelled.set()
        with self._lock:
            if not self._done:
                self._done, self._error = True, TimeoutError()
        self._ready.set()

    def _wake(self) -> None:
        if not self._signalled:
            self._signalled = True
            self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self) -> tuple[list[Any], bool]:
        """Wait for the next batch; raise the producer's error once its events are drained."""
        await self._ready.wait()
        with self._lock:
            items, self._items = self._items, []
            self._signalled = False
            done, error = self._done, self._error
            if not done:  # once done, stay ready: the error (if any) is raised on the next take
                self._ready.clear()
        if done and error is not None and not items:
            raise error
        return items, done and error is None


def _produce(predict_stream: Any, request: ResponsesAgentRequest, feed: _Feed) -> None:
    """Iterate the agent's stream on a worker thread until it ends, fails or is cancelled."""
    events: Iterable[Any] = ()
    try:
        events = predict_stream(request)
        for event in events:
            if feed.cancelled.is_set():
                break
            feed.put(event)
    except BaseException as exc:
        feed.finish(exc)
    else:
        feed.finish()
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
