"""Run a synchronous ResponsesAgent from the event loop: worker threads, a deadline, and cancellation.

`predict` and `predict_stream` block (retrieval, model calls), so they run on worker threads; the caller's
context variables (the active MLflow span) travel with them, and each call runs inside the request's
`deadline.request_deadline`, entered on the worker thread, so model clients can cap their timeouts
with `deadline.remaining()`. When the request times out, or a stream's client leaves, the deadline is
cancelled (model clients stop at `deadline.cancelled()`) and the call is abandoned: a queued call never
starts, and a running one no longer counts against the pool, which starts another thread in its place
(at most `spare` such threads at once), so new requests never wait behind calls nobody awaits. A stream's
events cross back to the loop in batches, so a fast model does not pay one loop wake-up per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Future
from typing import Any, Literal

from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

from ragworks.agents.deadline import Deadline, request_deadline

logger = logging.getLogger(__name__)

MIN_SPARE = 32
"""Threads the pool may add, at the least, for calls abandoned while still running (default `spare`)."""


UNRUN = "the request ended before the agent started (the client left, or it waited past its deadline)"
"""Why the trace of a call that never ran is cancelled."""


class AgentRunner:
    """Call one agent from async code, `workers` requests at a time.

    A call dropped before it ran still leaves its trace when the agent can record one
    (`record_unrun(request, reason, stream=...)`, as `ServedAgent` does): one trace per request.
    """

    def __init__(self, agent: ResponsesAgent, *, workers: int, spare: int | None = None) -> None:
        self.agent = agent
        self.pool = WorkerPool(workers, spare=max(workers, MIN_SPARE) if spare is None else spare)

    def record_unrun(self, request: ResponsesAgentRequest, *, stream: bool) -> None:
        """Leave the trace of a request the agent never ran (when the agent can record one)."""
        record = getattr(self.agent, "record_unrun", None)
        if record is not None:
            record(request, UNRUN, stream=stream)

    async def predict(self, request: ResponsesAgentRequest, *, timeout: float) -> ResponsesAgentResponse:
        """The agent's answer; TimeoutError after `timeout` seconds (the call is then cancelled)."""
        job = self.pool.submit(
            self.agent.predict,
            request,
            deadline=_deadline(timeout),
            on_unrun=lambda: self.record_unrun(request, stream=False),
        )
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout)
        finally:
            self.pool.abandon(job)  # a no-op once the call has returned

    async def stream(self, request: ResponsesAgentRequest, *, timeout: float) -> AsyncIterator[Any]:
        """The agent's stream events; TimeoutError when the whole stream takes longer than `timeout`.

        Closing the iterator (the client left) cancels the agent's call: wrap it in `contextlib.aclosing`
        so that happens at once rather than when the generator is collected.
        """
        loop = asyncio.get_running_loop()
        feed = _Feed(loop, _deadline(timeout))
        job = self.pool.submit(
            _produce,
            self.agent.predict_stream,
            request,
            feed,
            deadline=feed.deadline,
            on_unrun=lambda: self.record_unrun(request, stream=True),
        )
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
            self.pool.abandon(job)

    def close(self) -> None:
        """Stop taking work; queued calls are dropped, running ones finish in the background."""
        self.pool.shutdown()


def _deadline(timeout: float) -> Deadline:
    return Deadline(expires_at=time.monotonic() + timeout)


class _Job:
    """One call for the pool: what to run, its deadline, and the future the caller awaits."""

    __slots__ = ("abandoned", "args", "context", "deadline", "fn", "future", "on_unrun", "state")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        deadline: Deadline,
        on_unrun: Callable[[], None] | None = None,
    ) -> None:
        self.fn, self.args, self.deadline, self.on_unrun = fn, args, deadline, on_unrun
        self.context = contextvars.copy_context()
        self.future: Future[Any] = Future()
        self.state: Literal["queued", "running", "done"] = "queued"
        self.abandoned = False

    def run(self) -> None:
        """Run the call in the caller's context, inside its deadline (worker thread)."""
        if not self.future.set_running_or_notify_cancel():
            return
        if self.deadline.cancelled:  # waited in the queue past its deadline: nobody wants the answer
            self.unrun()
            self.future.set_exception(TimeoutError("The call waited for a worker past its deadline."))
            return
        try:
            result = self.context.run(self._call)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)

    def unrun(self) -> None:
        """The call will never run: let its `on_unrun` leave a trace, in the caller's context."""
        if self.on_unrun is None:
            return
        try:
            self.context.run(self.on_unrun)
        except Exception as exc:  # a trace that cannot be recorded must not fail the request's cleanup
            logger.warning("Could not record the trace of a call that never ran: %s", exc)

    def _call(self) -> Any:
        # Any: whatever the agent returns
        with request_deadline(0, deadline=self.deadline):
            return self.fn(*self.args)


class WorkerPool:
    """Daemon threads running `_Job`s: `size` for calls someone awaits, plus up to `spare` for abandoned ones.

    Threads start when work arrives and all are busy; a thread whose abandoned call finally returns
    leaves once the pool is back within `size`, so the pool shrinks again after a model recovers.
    """

    def __init__(self, size: int, *, spare: int, name: str = "ragworks-agent") -> None:
        self.size, self.spare, self.name = size, spare, name
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self.threads = 0
        """Threads alive."""
        self.idle = 0
        """Threads waiting for work."""
        self.stuck = 0
        """Threads still running a call that was abandoned."""
        self._closed = False

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        deadline: Deadline,
        on_unrun: Callable[[], None] | None = None,
    ) -> _Job:
        """Queue `fn(*args)` to run on a worker inside `deadline`; the job's `future` has its result.

        `on_unrun` is called (in the caller's context) if the job is dropped before it runs.
        """
        job = _Job(fn, args, deadline, on_unrun)
        with self._cond:
            if self._closed:
                raise RuntimeError("The agent's worker pool is shut down; the server is stopping.")
            self._jobs.append(job)
            self._grow()
            self._cond.notify()
        return job

    def abandon(self, job: _Job) -> None:
        """Nobody awaits `job` now: cancel its deadline; drop it if queued, free its thread if running."""
        job.deadline.cancel()
        with self._cond:
            if job.abandoned or job.state == "done":
                return
            job.abandoned = True
            if job.state == "running":
                self.stuck += 1
                self._grow()  # the queue may be waiting on exactly this thread
                return
            self._jobs.remove(job)
            job.state = "done"
            job.future.cancel()
        job.unrun()  # outside the lock: it records a trace

    def shutdown(self) -> None:
        """Drop queued jobs and let idle threads exit; running calls finish on their own."""
        with self._cond:
            self._closed = True
            while self._jobs:
                self._jobs.popleft().future.cancel()  # the server is stopping: no traces for these
            self._cond.notify_all()

    def _grow(self) -> None:
        """Start a thread if queued work has no idle thread and the pool has room (lock held)."""
        working = self.threads - self.stuck
        if len(self._jobs) > self.idle and working < self.size and self.threads < self.size + self.spare:
            self.threads += 1
            thread = threading.Thread(target=self._work, name=f"{self.name}-{self.threads}", daemon=True)
            thread.start()

    def _next(self) -> _Job | None:
        """The next job, or None when this thread should exit (lock held)."""
        while not self._jobs:
            if self._closed or self.threads - self.stuck > self.size:
                self.threads -= 1
                return None
            self.idle += 1
            self._cond.wait()
            self.idle -= 1
        job = self._jobs.popleft()
        job.state = "running"
        return job

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._next()
            if job is None:
                return
            job.run()
            with self._cond:
                job.state = "done"
                if job.abandoned:
                    self.stuck -= 1
                    self._cond.notify()  # the pool may be over `size`: an idle thread re-checks


class _Feed:
    """Events from a worker thread to the loop: a locked list plus one wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: Deadline) -> None:
        self._loop = loop
        self.deadline = deadline
        """Cancelled when the consumer stops or the stream's time is up; the producer checks it."""
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._signalled = False
        self._done = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()

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
        self.deadline.cancel()
        with self._lock:
            if not self._done:
                self._done, self._error = True, TimeoutError()
        self._ready.set()

    def _wake(self) -> None:
        if not self._signalled:
            self._signalled = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
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
            if feed.deadline.cancelled:
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
