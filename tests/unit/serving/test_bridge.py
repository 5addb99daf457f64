"""The agent's worker pool: deadlines reach the call, abandoned calls stop counting, the pool shrinks back."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest

from ragworks.agents import deadline
from ragworks.agents.deadline import Deadline
from ragworks.serving._bridge import AgentRunner, WorkerPool

COLOUR: contextvars.ContextVar[str] = contextvars.ContextVar("colour", default="none")


def _in(seconds: float) -> Deadline:
    return Deadline(expires_at=time.monotonic() + seconds)


def _wait_for(check: Any, timeout: float = 5.0) -> None:
    stop = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < stop, "timed out waiting"
        time.sleep(0.005)


def test_a_call_runs_in_the_callers_context_inside_its_deadline() -> None:
    pool = WorkerPool(1, spare=1)
    COLOUR.set("blue")
    job = pool.submit(lambda: (COLOUR.get(), deadline.remaining()), deadline=_in(5))
    colour, remaining = job.future.result(timeout=5)
    assert colour == "blue" and remaining is not None and 4 < remaining <= 5
    assert deadline.current() is None  # the caller's own context is untouched


def test_an_abandoned_call_frees_its_place_and_the_pool_shrinks_back() -> None:
    pool = WorkerPool(1, spare=2)
    release = threading.Event()
    stuck = pool.submit(release.wait, 10, deadline=_in(10))
    _wait_for(lambda: stuck.state == "running")
    pool.abandon(stuck)
    assert stuck.deadline.cancelled
    fresh = pool.submit(lambda: "answer", deadline=_in(5))
    assert fresh.future.result(timeout=2) == "answer"  # not queued behind the stuck call
    assert pool.threads == 2 and pool.stuck == 1
    release.set()
    _wait_for(lambda: pool.threads == 1 and pool.stuck == 0)


def test_stuck_threads_are_bounded_by_spare() -> None:
    pool = WorkerPool(1, spare=1)
    release = threading.Event()
    for _ in range(2):
        job = pool.submit(release.wait, 10, deadline=_in(10))
        _wait_for(lambda: job.state == "running")  # noqa: B023  # waited on within the iteration
        pool.abandon(job)
    waiting = pool.submit(lambda: "late", deadline=_in(10))
    time.sleep(0.1)
    assert not waiting.future.done() and pool.threads == 2  # no third thread
    release.set()
    assert waiting.future.result(timeout=5) == "late"


def test_a_queued_call_abandoned_before_it_starts_never_runs() -> None:
    pool = WorkerPool(1, spare=0)
    release = threading.Event()
    ran: list[str] = []
    first = pool.submit(release.wait, 10, deadline=_in(10))
    _wait_for(lambda: first.state == "running")
    queued = pool.submit(ran.append, "ran", deadline=_in(10))
    pool.abandon(queued)
    release.set()
    after = pool.submit(lambda: "after", deadline=_in(5))
    assert after.future.result(timeout=5) == "after"
    assert queued.future.cancelled() and ran == []


def test_a_call_that_waited_past_its_deadline_is_not_started() -> None:
    pool = WorkerPool(1, spare=0)
    release = threading.Event()
    ran: list[str] = []
    pool.submit(release.wait, 10, deadline=_in(10))
    late = pool.submit(ran.append, "ran", deadline=_in(0.05))
    time.sleep(0.1)
    release.set()
    with pytest.raises(TimeoutError):
        late.future.result(timeout=5)
    assert ran == []


def test_runner_timeout_cancels_the_deadline_and_frees_the_thread() -> None:
    seen: list[Deadline | None] = []

    class Agent:
        def predict(self, request: object) -> str:
            seen.append(deadline.current())
            while not deadline.cancelled():
                time.sleep(0.005)
            time.sleep(0.3)  # still busy after the request gave up
            return "late"

    runner = AgentRunner(Agent(), workers=1)  # type: ignore[arg-type]  # any object with predict

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await runner.predict(object(), timeout=0.1)  # type: ignore[arg-type]
        assert runner.pool.stuck == 1

    asyncio.run(main())
    (active,) = seen
    assert active is not None and active.cancelled
    _wait_for(lambda: runner.pool.stuck == 0)
    runner.close()
