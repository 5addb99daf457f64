"""The ASGI middleware behind `/metrics`: what each HTTP exchange was, read off the messages it sends.

Plain ASGI (Starlette's `BaseHTTPMiddleware` would buffer streams): it times the exchange, notes the
status, and for event streams the first chunk that carries answer text (time to first token) and the
error event a failed stream ends with. Nothing is parsed on the way except the small body of an error
answer, to read its error `code`. An exchange whose answer was started and never finished is a
cancelled stream (the client left, or the stream was stopped).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
"""Methods reported by name; any other is `other`, so a client cannot grow the label set."""
TOKEN_MARKERS = (b'"type": "response.output_text.delta"', b'"delta": {"content": ')
"""A Responses text delta, a chat completion chunk with text: the first token has arrived."""
STREAM_ERRORS = (b'data: {"type": "error"', b'data: {"error": ')
"""How a Responses stream and a chat completion stream end when they fail (see `_dispatch.sse`)."""
_CODE = re.compile(r"[a-z0-9_]{1,40}")
_ERROR_BODY_CAP = 4096


class Recorder(Protocol):
    """Where finished exchanges go (`metrics.ServingMetrics`)."""

    def started(self) -> None:
        """A request came in."""

    def finished(self, exchange: Exchange) -> None:
        """A request was answered (or given up on)."""


@dataclass(slots=True)
class Exchange:
    """What one request and its answer were, as the middleware saw them."""

    route: str
    method: str
    started: float
    status: int = 0
    streaming: bool = False
    first_token: float | None = None
    finished: float | None = None
    """When the last body chunk was sent (None: the answer never finished)."""
    error: str | None = None
    """The error `code` of the answer or of the stream's error event; `cancelled` for a stream cut short."""
    raised: bool = False
    _body: bytes = b""

    def see(self, message: Message) -> None:
        """Note what one message sent to the client says."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.streaming = _is_event_stream(message.get("headers", ()))
            return
        if message["type"] != "http.response.body":
            return
        chunk = message.get("body", b"")
        if self.streaming:
            self._see_stream(chunk)
        elif self.status >= 400 and len(self._body) < _ERROR_BODY_CAP:
            self._body += chunk[:_ERROR_BODY_CAP]
        if not message.get("more_body", False):
            self.finished = time.perf_counter()

    def _see_stream(self, chunk: bytes) -> None:
        if self.first_token is None and any(marker in chunk for marker in TOKEN_MARKERS):
            self.first_token = time.perf_counter()
        if chunk.startswith(STREAM_ERRORS):
            self.error = _code_of(chunk[len(b"data: ") :]) or "stream_error"

    def outcome(self) -> str | None:
        """The error kind of this exchange, or None when it succeeded."""
        if self.error is not None:
            return self.error
        if self.status == 0:
            return "internal_error"  # the app raised before answering: the server's 500
        if self.status >= 400:
            return _code_of(self._body) or f"http_{self.status}"
        if self.finished is None:
            return "broken" if self.raised else "cancelled"
        return None


def _is_event_stream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for key, value in headers:
        if key.lower() == b"content-type":
            return value.startswith(b"text/event-stream")
    return False


def _code_of(body: bytes) -> str | None:
    """The `code` of an OpenAI error object (top level or under `error`), when it is a short identifier."""
    try:
        data = json.loads(body.split(b"\n\n", 1)[0])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else data.get("code")
    return code if isinstance(code, str) and _CODE.fullmatch(code) else None


class MetricsMiddleware:
    """Record every HTTP exchange but the scrapes themselves; the outermost layer, so refusals count too."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        recorder: Recorder,
        paths: Callable[[], Iterable[str]],
        skip: frozenset[str],
    ) -> None:
        """`paths`: the app's fixed route paths, read on the first request; `skip`: paths not recorded."""
        self.app = app
        self.recorder = recorder
        self._paths = paths
        self._known: frozenset[str] | None = None
        self._skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or scope["path"] in self._skip:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        exchange = Exchange(route="", method=method, started=time.perf_counter())

        async def observed(message: Message) -> None:
            exchange.see(message)
            await send(message)

        self.recorder.started()
        try:
            await self.app(scope, receive, observed)
        except BaseException:
            exchange.raised = True
            raise
        finally:
            exchange.route = self._route(scope)
            self.recorder.finished(exchange)

    def _route(self, scope: Scope) -> str:
        """The route's template (`/v1/responses/{id}`), a fixed path, or `other` (unknown paths)."""
        path = getattr(scope.get("route"), "path", None)  # set by Starlette's router when one matched
        if isinstance(path, str):
            return path
        if self._known is None:
            self._known = frozenset(p for p in self._paths() if "{" not in p)
        return scope["path"] if scope["path"] in self._known else "other"
