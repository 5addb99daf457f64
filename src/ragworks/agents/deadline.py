"""The time left for the request being answered, so model calls never outlive it.

The server opens a `request_deadline` around each agent call (inside the worker thread, so the context
variable is the worker's own); model clients cap their timeouts and retries with `remaining()` and stop
early when `cancelled()` says the request is gone. Outside a request nothing is capped.

Example:
    >>> with request_deadline(30.0):
    ...     timeout = min(120.0, remaining() or 120.0)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(slots=True)
class Deadline:
    """When the current request must be answered by, and whether it was abandoned."""

    expires_at: float
    """`time.monotonic()` value after which the request has timed out."""
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float:
        """Seconds left (never below 0)."""
        return max(0.0, self.expires_at - time.monotonic())

    def cancel(self) -> None:
        """Mark the request abandoned (the client left, or the server gave up on it)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """True once the request was abandoned or its time is up."""
        return self._cancelled.is_set() or time.monotonic() >= self.expires_at


_current: ContextVar[Deadline | None] = ContextVar("ragworks_request_deadline", default=None)


@contextmanager
def request_deadline(seconds: float, *, deadline: Deadline | None = None) -> Iterator[Deadline]:
    """Bound everything run inside the block by `seconds` (or by an existing `deadline` object)."""
    active = deadline or Deadline(expires_at=time.monotonic() + seconds)
    token = _current.set(active)
    try:
        yield active
    finally:
        _current.reset(token)


def current() -> Deadline | None:
    """The deadline of the request being answered, or None outside one."""
    return _current.get()


def remaining() -> float | None:
    """Seconds left for the current request, or None when no request bounds the call."""
    active = _current.get()
    return active.remaining() if active is not None else None


def cancelled() -> bool:
    """True when the current request was abandoned or timed out (False outside a request)."""
    active = _current.get()
    return active.cancelled if active is not None else False
