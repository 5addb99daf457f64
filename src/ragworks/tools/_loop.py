"""One asyncio loop on a daemon thread, so async clients (MCP sessions) serve sync callers on any thread.

The agent runs synchronously (`ResponsesAgent.predict`, the server's worker threads), while MCP
sessions are async and bound to the loop that opened them. Every session lives on this one loop;
callers hand it coroutines and wait for the result with a timeout.

Example:
    >>> background_loop().run(asyncio.sleep(0, result=42), timeout=1.0)
    42
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class BackgroundLoop:
    """An event loop running forever on its own daemon thread."""

    def __init__(self, name: str = "ragworks-async") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule `coro` on the loop; its future can be waited on from any other thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("BackgroundLoop.submit was called on its own loop; await the coroutine there.")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, _T], *, timeout: float | None) -> _T:
        """Run `coro` on the loop and wait for its result; on timeout it is cancelled (TimeoutError)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None


_shared: BackgroundLoop | None = None
_lock = threading.Lock()


def background_loop() -> BackgroundLoop:
    """The process's background loop, started on first use."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = BackgroundLoop()
        return _shared
