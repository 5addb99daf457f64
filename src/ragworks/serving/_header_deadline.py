"""Close connections whose request headers do not arrive in time: uvicorn itself waits for them forever.

The ASGI app only sees a request once its headers are in, so `LimitsMiddleware`'s body deadline cannot
cut off a client that opens a connection and sends nothing, or trickles its headers: each such client
holds a socket (and, with uvicorn's `limit_concurrency`, a place) for as long as it likes. The protocol
here is uvicorn's httptools protocol plus one timer, armed when a connection opens and when a request's
first byte arrives, and disarmed when its headers are complete; when it fires the client gets a 408
and the connection is closed (idle kept-alive connections are still uvicorn's `timeout_keep_alive`).

It subclasses a uvicorn class rather than a documented extension point, so it is feature-detected:
without httptools, or when the methods it hooks are missing, `http_protocol` returns "auto" (uvicorn's
own choice, no header deadline) and logs that once.

Example:
    >>> config = uvicorn.Config(app, http=http_protocol(10.0))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

HOOKED = ("connection_made", "connection_lost", "on_message_begin", "on_headers_complete")
"""The httptools protocol methods the deadline hooks into."""


def http_protocol(header_timeout_s: float) -> type[asyncio.Protocol] | str:
    """uvicorn's `http=`: its httptools protocol with a header deadline, or "auto" when unavailable."""
    base = _httptools_protocol()
    if base is None:
        return "auto"
    if header_timeout_s not in _CLASSES:  # one class per timeout: uvicorn builds a protocol per connection
        _CLASSES[header_timeout_s] = _with_deadline(base, header_timeout_s)
    return _CLASSES[header_timeout_s]


_CLASSES: dict[float, type[asyncio.Protocol]] = {}

FOR_WORKERS = "ragworks.serving._header_deadline:WorkerProtocol"
"""uvicorn's `http=` for `--workers N`: worker processes import the protocol by name (a class made here
cannot be pickled to them) and build it from the serve spec they inherit."""


def __getattr__(name: str) -> type[asyncio.Protocol] | str:
    """`WorkerProtocol`: the header-deadline protocol for the limits in this worker's serve spec."""
    if name != "WorkerProtocol":
        raise AttributeError(name)
    from ragworks.serving.app import spec_from_env  # here: the app imports the server, not the reverse
    from ragworks.serving.limits import ServingLimits

    return http_protocol(ServingLimits(**spec_from_env().limits).body_deadline_s)


@functools.cache
def _httptools_protocol() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as exc:  # httptools missing (uvicorn without [standard]) or the module moved
        logger.warning(
            "Request headers have no deadline: uvicorn's httptools protocol is unavailable (%s).", exc
        )
        return None
    missing = [name for name in HOOKED if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        logger.warning(
            "Request headers have no deadline: this uvicorn's httptools protocol lacks %s.",
            ", ".join(missing),
        )
        return None
    return HttpToolsProtocol


def _with_deadline(base: Any, header_timeout_s: float) -> type[asyncio.Protocol]:
    # Any: uvicorn's protocol class, found at runtime; its attributes (loop, transport) are not typed here
    class HeaderDeadlineProtocol(base):
        """uvicorn's httptools protocol, closing connections whose request headers are late."""

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(_late_response(header_timeout_s))
                self.transport.close()

    return HeaderDeadlineProtocol


def _late_response(seconds: float) -> bytes:
    message = (
        f"The request headers did not arrive within {seconds:g} s of the connection (or of the "
        "request's first byte), so the server closed it. Send the whole request at once."
    )
    error = {"message": message, "type": "invalid_request_error", "code": "header_timeout", "param": None}
    body = json.dumps({"error": error}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
