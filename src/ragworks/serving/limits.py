"""Request limits: body deadline and size, input length, per-request timeout and concurrent requests.

`LimitsMiddleware` is plain ASGI, so a refused request costs no routing, no JSON parsing and no thread.
A request counts against `max_concurrency` only once its whole body is in: a client that sends its
headers and then trickles (or withholds) the body holds no agent slot, and is cut off with 408 after
`body_timeout_s`. Bodies being read are bounded by that deadline and by `max_body_readers` (503 beyond
it, which bounds the memory held by half-sent bodies); beyond `max_concurrency` requests in flight the
answer is 503 with `Retry-After`, and a body larger than `max_body_bytes` gets 413 before it is read in full.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragworks.errors import ConfigError
from ragworks.serving.errors import ErrorInfo, error_info, send_error

UNLIMITED_PATHS = frozenset({"/health", "/metrics"})
"""Health checks and metrics scrapes must answer even when the server is full."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ServingLimits:
    """What one server process accepts; every refusal says which limit to raise."""

    max_body_bytes: int = 1_048_576
    """Largest request body, in bytes (413 beyond it)."""
    max_input_chars: int = 100_000
    """Largest total length of the input messages, in characters (400 beyond it)."""
    timeout_s: float = 120.0
    """Longest time one request may take, streaming included (504, or an error event mid-stream)."""
    max_concurrency: int = 64
    """Most requests in flight per process, counted once their body is in (503 with Retry-After beyond it)."""
    retry_after_s: int = 1
    """What the 503 tells clients to wait before retrying."""
    agent_threads: int | None = None
    """Threads running the agent; None: one per core for the offline model, else `max_concurrency`."""
    body_timeout_s: float = 10.0
    """Longest wait for a request's body once its headers are in (408 beyond it); at most `timeout_s`."""
    max_body_readers: int | None = None
    """Most requests sending their bodies at once (503 beyond it); None: 4 x max_concurrency, at least 256."""

    def __post_init__(self) -> None:
        positive = (
            "max_body_bytes",
            "max_input_chars",
            "timeout_s",
            "max_concurrency",
            "retry_after_s",
            "body_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"Serving limit {name} must be greater than 0, got {getattr(self, name)}.")
        for name in ("agent_threads", "max_body_readers"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"Serving limit {name} must be greater than 0 (or unset), got {value}.")

    @property
    def body_deadline_s(self) -> float:
        """Seconds a client has to send its body: `body_timeout_s`, capped by the request timeout."""
        return min(self.body_timeout_s, self.timeout_s)

    @property
    def body_readers(self) -> int:
        """Most bodies read at once (`max_body_readers`, or its default)."""
        return self.max_body_readers or max(256, 4 * self.max_concurrency)


class BodyTooLarge(Exception):
    """The request body passed the limit while it was read."""


async def read_body(receive: Receive, *, limit: int) -> bytes | None:
    """Read the whole request body, or None when the client went away first."""
    chunks: list[bytes] = []  # joined once at the end: appending to bytes would copy O(n^2)
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields `body` once, then waits on the real one (so disconnects still arrive)."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


class LimitsMiddleware:
    """Read bodies within their deadline and size; admit at most `max_concurrency` complete requests."""

    def __init__(self, app: ASGIApp, *, limits: ServingLimits) -> None:
        self.app = app
        self.limits = limits
        self.in_flight = 0
        """Requests admitted (body in) and not yet answered."""
        self.reading = 0
        """Requests whose bodies are still arriving."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limits.max_concurrency:  # full already: refuse before reading
            await self._overloaded(send)
            return
        if scope["method"] in BODY_METHODS:
            body = await self._body(scope, receive, send)
            if body is None:  # answered already (408, 413, 503), or the client left
                return
            receive = replay(body, receive)
            if self.in_flight >= self.limits.max_concurrency:
                await self._overloaded(send)
                return
        await self._admitted(scope, receive, send)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request in one slot, given back as soon as its answer is sent (or the app returns)."""
        self.in_flight += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.in_flight -= 1

        async def send_and_release(message: Message) -> None:
            await send(message)
            # The client has the whole answer and may send its next request before this task unwinds.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                release()

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            release()

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request's whole body, or None once the request is answered or the client has left."""
        if self.reading >= self.limits.body_readers:
            message = (
                f"The server is busy: {self.limits.body_readers} requests are sending their bodies, the "
                f"most it reads at once. Retry after {self.limits.retry_after_s} s, or start it with a "
                "larger max_body_readers."
            )
            await self._refuse(send, error_info(503, message, code="server_overloaded"), retry=True)
            return None
        self.reading += 1
        try:
            return await self._read_in_time(scope, receive, send)
        finally:
            self.reading -= 1

    async def _read_in_time(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        limit, seconds = self.limits.max_body_bytes, self.limits.body_deadline_s
        until = asyncio.get_running_loop().time() + seconds  # one deadline for reading and draining
        try:
            async with asyncio.timeout_at(until):
                if _content_length(scope) <= limit:
                    return await read_body(receive, limit=limit)
                raise BodyTooLarge
        except TimeoutError:
            await self._refuse(send, _slow_body(seconds))
            return None
        except BodyTooLarge:
            pass
        # Read the rest first: closing on unread data resets the socket and the client loses the 413.
        try:
            async with asyncio.timeout_at(until):
                drained = await _drain(receive, cap=max(DRAIN_CAP, 4 * limit))
        except TimeoutError:
            drained = False
        await send_error(send, _too_large(limit), None if drained else {"Connection": "close"})
        return None

    async def _refuse(self, send: Send, info: ErrorInfo, *, retry: bool = False) -> None:
        """Answer before the body was read, and close: the rest of the body is never read."""
        headers = {"Connection": "close"}
        if retry:
            headers["Retry-After"] = str(self.limits.retry_after_s)
        await send_error(send, info, headers)

    async def _overloaded(self, send: Send) -> None:
        limit = self.limits.max_concurrency
        message = (
            f"The server is busy: {limit} requests are in flight, the most it takes at once. "
            f"Retry after {self.limits.retry_after_s} s, or start it with a larger --max-concurrency "
            "or more --workers."
        )
        info = error_info(503, message, code="server_overloaded")
        await send_error(send, info, {"Retry-After": str(self.limits.retry_after_s)})


def _too_large(limit: int) -> ErrorInfo:
    message = (
        f"The request body is larger than {limit:,} bytes. Send a shorter conversation, "
        "or start the server with a larger --max-body-mb."
    )
    return error_info(413, message, code="body_too_large")


def _slow_body(seconds: float) -> ErrorInfo:
    message = (
        f"The request body did not arrive within {seconds:g} s of its headers, so the server stopped "
        "waiting. Send the whole body at once (check Content-Length), or start the server with a "
        "larger --body-timeout."
    )
    # OpenAI's shape, typed as the client's error: the server was ready, the body was not.
    return ErrorInfo(status=408, message=message, code="body_timeout", type="invalid_request_error")


DRAIN_CAP = 64 * 1024 * 1024
"""How much of a too-large body is read and dropped so the 413 reaches the client; beyond it, hang up."""


async def _drain(receive: Receive, *, cap: int) -> bool:
    """Read and drop the rest of a body; False when it is longer than `cap` or the client left."""
    size = 0
    while size <= cap:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


def _content_length(scope: Scope) -> int:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
