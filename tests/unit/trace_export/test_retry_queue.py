"""The trace queue's memory: bounded in bytes as well as in traces, and nothing kept once stored."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Sequence

from ragworks.trace_export.retry_queue import TraceQueue


class Item:
    """A queued trace of `size` bytes (weak-referenceable, so a test can see whether it is alive)."""

    def __init__(self, n: int, size: int = 100) -> None:
        self.n, self.size = n, size


def _size(item: Item) -> int:
    return item.size


def test_a_failing_store_keeps_no_more_bytes_than_the_budget_oldest_dropped_first() -> None:
    kept: list[list[int]] = []

    def write(items: Sequence[Item]) -> dict[int, str]:
        kept.append([item.n for item in items])
        return dict.fromkeys(range(len(items)), "OperationalError: unable to open database file")

    queue: TraceQueue[Item] = TraceQueue(
        write, size=_size, max_pending_bytes=1_000, backoff=(30.0, 30.0), put_timeout=0.01
    )
    for n in range(50):
        queue.put(Item(n))  # 100 bytes each: room for ten
        assert queue.stats().pending_bytes <= 1_000
    stats = queue.stats()
    assert stats.pending == 10 and stats.pending_bytes == 1_000
    assert stats.dropped == 40  # counted, not silently lost
    queue.flush(terminate=True)
    assert queue.stats().pending_bytes == 0


def test_a_trace_larger_than_the_budget_still_goes_through_on_its_own() -> None:
    written: list[int] = []

    def write(items: Sequence[Item]) -> dict[int, str]:
        written.extend(item.n for item in items)
        return {}

    queue: TraceQueue[Item] = TraceQueue(write, size=_size, max_pending_bytes=1_000)
    queue.put(Item(1, size=5_000))
    queue.flush()
    assert written == [1] and queue.stats().dropped == 0 and queue.stats().pending_bytes == 0


def test_callers_wait_on_the_byte_budget_while_the_store_keeps_up() -> None:
    gate = threading.Semaphore(0)
    written: list[int] = []

    def write(items: Sequence[Item]) -> dict[int, str]:
        gate.acquire(timeout=5)
        written.extend(item.n for item in items)
        return {}

    queue: TraceQueue[Item] = TraceQueue(
        write, size=_size, max_batch=1, max_pending_bytes=250, put_timeout=10
    )
    producer = threading.Thread(target=lambda: [queue.put(Item(n)) for n in range(10)])
    producer.start()
    producer.join(0.3)
    assert producer.is_alive()  # the batch in flight and one queued fill the budget: it waits
    assert queue.stats().pending_bytes <= 250
    for _ in range(10):
        gate.release()
    producer.join(5)
    queue.flush(terminate=True)
    assert written == list(range(10)) and queue.stats().dropped == 0


def test_a_store_slower_than_put_timeout_but_working_loses_nothing() -> None:
    """Each batch takes 3x `put_timeout` (a busy machine): callers wait for it instead of dropping."""
    written: list[int] = []

    def write(items: Sequence[Item]) -> dict[int, str]:
        time.sleep(0.15)
        written.extend(item.n for item in items)
        return {}

    queue: TraceQueue[Item] = TraceQueue(write, max_batch=2, max_pending=2, put_timeout=0.05)
    for n in range(8):
        queue.put(Item(n))
    queue.flush(terminate=True)
    assert written == list(range(8)) and queue.stats().dropped == 0


def test_a_store_that_stalls_still_drops_after_the_wait() -> None:
    """A batch that never comes back: callers wait at most `max_put_wait`, then the oldest is dropped."""
    release = threading.Event()

    def write(items: Sequence[Item]) -> dict[int, str]:
        release.wait(5)
        return {}

    queue: TraceQueue[Item] = TraceQueue(
        write, max_batch=1, max_pending=1, put_timeout=0.05, max_put_wait=0.3
    )
    started = time.monotonic()
    for n in range(3):
        queue.put(Item(n))
    assert time.monotonic() - started < 2  # bounded, not forever
    assert queue.stats().dropped >= 1
    release.set()
    queue.flush(terminate=True)


def test_stored_traces_are_let_go_while_the_writer_waits_for_more() -> None:
    def write(items: Sequence[Item]) -> dict[int, str]:
        return {}

    queue: TraceQueue[Item] = TraceQueue(write, max_batch=100)
    items = [Item(n) for n in range(20)]
    refs = [weakref.ref(item) for item in items]
    for item in items:
        queue.put(item)
    queue.flush()
    del items, item
    gc.collect()
    assert queue.stats().stored == 20
    assert [ref for ref in refs if ref() is not None] == []  # the last batch is not held by the thread
