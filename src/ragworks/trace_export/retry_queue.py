"""A bounded queue of finished traces, written in batches by one thread, retried, dropped with a count.

The queue is bounded in traces (`max_pending`) and, given a `size` function, in bytes
(`max_pending_bytes`, counting the batch in flight), so a backlog of large traces cannot hold more
memory than that. While the store takes batches, a full queue makes callers wait instead of losing
traces: as long as a batch is being written or one was stored within `put_timeout` seconds, up to
`max_put_wait` in all. While it fails (down, read-only, the writer gone), failed
traces go back to the front of the queue and are retried with exponential backoff; a trace that
failed `max_attempts` times, or the oldest one when the queue is full, is dropped. Drops are
counted and logged at most once per `warn_interval` seconds, so a dead store costs one log line a
minute, not one per trace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger("ragworks.trace_export")

T = TypeVar("T")
WriteBatch = Callable[[Sequence[T]], dict[int, str]]
"""Stores a batch; returns {index in the batch: error} for every item that was not stored."""


def _no_size(_item: object) -> int:
    return 0  # a queue bounded in count only


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportStats:
    """Counters of a trace queue since it was made."""

    pending: int
    """Traces waiting in memory now."""
    stored: int
    """Traces the store committed."""
    retried: int
    """Failed attempts that were put back for another try."""
    dropped: int
    """Traces given up on (store failing past the retries, or the queue full)."""
    failed_batches: int
    """Batches with at least one trace not stored."""
    last_error: str | None
    """Why the last failed batch failed."""
    pending_bytes: int = 0
    """Memory the pending traces hold, as the queue's `size` function measures it (0 without one)."""


@dataclass(slots=True)
class _Entry(Generic[T]):
    item: T
    size: int = 0
    attempts: int = 0


class TraceQueue(Generic[T]):
    """Bounded FIFO drained by one daemon thread that hands `write` what is pending (module doc)."""

    def __init__(
        self,
        write: WriteBatch[T],
        *,
        max_batch: int = 128,
        max_pending: int = 5_000,
        max_attempts: int = 8,
        backoff: tuple[float, float] = (0.5, 30.0),
        put_timeout: float = 5.0,
        max_put_wait: float = 60.0,
        flush_timeout: float = 10.0,
        warn_interval: float = 60.0,
        size: Callable[[T], int] | None = None,
        max_pending_bytes: int | None = None,
    ) -> None:
        """`size`: the bytes an item holds, for `max_pending_bytes` (None: bounded in count only)."""
        self._write = write
        self._size: Callable[[T], int] = size or _no_size
        self._max_bytes = max_pending_bytes
        self._bytes = 0  # held by the queued items and the batch in flight
        self._max_batch, self._max_pending, self._max_attempts = max_batch, max_pending, max_attempts
        self._backoff_base, self._backoff_cap = backoff
        self._put_timeout, self._flush_timeout = put_timeout, flush_timeout
        self._max_put_wait = max_put_wait
        self._warn_interval = warn_interval
        self._items: deque[_Entry[T]] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._healthy = True
        self._delay = 0.0
        self._retry_at = 0.0
        self._stored = self._retried = self._dropped = self._failed_batches = 0
        self._last_error: str | None = None
        self._unreported_drops = 0
        self._last_drop_reason = ""
        self._last_warning = -warn_interval  # the first drop is reported at once

    def put(self, item: T) -> None:
        """Queue a trace. Waits while the queue is full and the store keeps up; else drops the oldest."""
        entry = _Entry(item, size=self._size(item))
        with self._cond:
            self._wait_for_room(entry.size)
            while self._full(entry.size) and self._items:
                self._bytes -= self._items.popleft().size
                self._drop(1, self._full_reason())
            self._items.append(entry)
            self._bytes += entry.size
            self._ensure_thread()
            self._cond.notify_all()

    def _wait_for_room(self, size: int) -> None:
        """While full, wait as long as the store keeps up (lock held), at most `max_put_wait` seconds.

        The store keeps up while a batch is being written or one was stored within the last
        `put_timeout`: a slow but working store (a busy machine, a large batch) slows callers down
        instead of losing their traces. A failing store (unhealthy) or one that stalls stops the wait.
        """
        deadline = time.monotonic() + self._max_put_wait
        while self._full(size) and self._healthy and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stored = self._stored
            self._cond.wait(min(self._put_timeout, left))
            if self._full(size) and self._stored == stored and not self._in_flight:
                return  # nothing stored and nothing being written: the store has stopped keeping up

    def _full(self, size: int) -> bool:
        """Whether an item of `size` bytes finds no room (one always fits in an otherwise empty queue)."""
        if len(self._items) >= self._max_pending:
            return True
        over = self._max_bytes is not None and self._bytes + size > self._max_bytes
        return over and self._bytes > 0

    def _full_reason(self) -> str:
        if len(self._items) >= self._max_pending:
            return f"{self._max_pending} traces waiting (queue full)"
        return f"{self._bytes} bytes of traces waiting (queue full)"

    def stats(self) -> ExportStats:
        """A snapshot of the counters."""
        with self._cond:
            return ExportStats(
                pending=len(self._items) + self._in_flight,
                stored=self._stored,
                retried=self._retried,
                dropped=self._dropped,
                failed_batches=self._failed_batches,
                last_error=self._last_error,
                pending_bytes=self._bytes,
            )

    def flush(self, terminate: bool = False) -> None:
        """Wait until every queued trace is stored, or the store has failed for `flush_timeout` s.

        With `terminate`, what is still queued then is dropped (counted) and the thread stops.
        """
        start = time.monotonic()
        with self._cond:
            self._retry_at = 0.0  # a flush retries now rather than after the backoff
            self._cond.notify_all()
            while self._items or self._in_flight:
                if self._thread is None or not self._thread.is_alive():
                    self._ensure_thread()
                failing_too_long = not self._healthy and time.monotonic() - start > self._flush_timeout
                if failing_too_long:
                    break
                self._cond.wait(0.05)
            if terminate:
                self._stopping = True
                if self._items:
                    self._drop(len(self._items), f"exiting while the store fails: {self._last_error}")
                    self._bytes -= sum(entry.size for entry in self._items)
                    self._items.clear()
                self._warn_drops(force=True)
                self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="ragworks-trace-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while self._write_next():
            pass

    def _write_next(self) -> bool:
        """Write one batch; False when stopping. Its own frame: a written batch is not kept alive
        (by a loop's local variable) while the thread waits for the next one."""
        with self._cond:
            batch = self._next_batch()
            if batch is None:
                return False
        try:
            failed = self._write([entry.item for entry in batch])
        except Exception as exc:  # the thread must survive a failed batch
            failed = dict.fromkeys(range(len(batch)), f"{type(exc).__name__}: {exc}")
        with self._cond:
            self._settle(batch, failed)
        return True

    def _next_batch(self) -> list[_Entry[T]] | None:
        """Wait for work (and for the backoff to pass); None when stopping with nothing left."""
        while True:
            if self._stopping and not self._items:
                return None
            wait = self._retry_at - time.monotonic()
            if self._items and wait <= 0:
                break
            self._cond.wait(wait if self._items else None)
        batch = [self._items.popleft() for _ in range(min(self._max_batch, len(self._items)))]
        self._in_flight = len(batch)
        self._cond.notify_all()  # room for callers waiting in put()
        return batch

    def _settle(self, batch: list[_Entry[T]], failed: dict[int, str]) -> None:
        self._in_flight = 0
        self._stored += len(batch) - len(failed)
        self._bytes -= sum(entry.size for i, entry in enumerate(batch) if i not in failed)
        if not failed:
            self._healthy, self._delay = True, 0.0
        else:
            self._failed_batches += 1
            self._healthy = False
            self._last_error = next(iter(failed.values()))
            self._delay = min(self._backoff_cap, max(self._backoff_base, self._delay * 2))
            self._retry_at = time.monotonic() + self._delay
            for index in sorted(failed, reverse=True):  # back to the front, in their order
                entry = batch[index]
                entry.attempts += 1
                if entry.attempts >= self._max_attempts:
                    self._bytes -= entry.size
                    self._drop(1, f"still failing after {entry.attempts} attempts: {failed[index]}")
                else:
                    self._retried += 1
                    self._items.appendleft(entry)
        self._cond.notify_all()

    def _drop(self, n: int, reason: str) -> None:
        self._dropped += n
        self._unreported_drops += n
        self._last_drop_reason = reason
        self._warn_drops()

    def _warn_drops(self, *, force: bool = False) -> None:
        """One warning line per `warn_interval` at most, with the count since the last one."""
        now = time.monotonic()
        if not self._unreported_drops or (not force and now - self._last_warning < self._warn_interval):
            return
        logger.warning(
            "Dropped %d traces (%d in all; %s). Check that the tracking store is up and writable.",
            self._unreported_drops,
            self._dropped,
            self._last_drop_reason,
        )
        self._unreported_drops, self._last_warning = 0, now
