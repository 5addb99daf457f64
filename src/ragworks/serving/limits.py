"""Request limits: body size, input length, per-request timeout and concurrent requests.

`LimitsMiddleware` is plain ASGI, so a refused request costs no routing, no JSON parsing and no thread:
beyond `max_concurrency` requests in flight it answers 503 with `Retry-After`, and a body larger than
`max_body_bytes` gets 413 before it is read in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragworks.errors import ConfigError
from ragworks.serving.errors import error_info, send_error

UNLIMITED_PATHS = frozenset({"/health"})
"""Health checks must answer even when the server is full."""


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
    """Most requests in flight per process (503 with Retry-After beyond it)."""
    retry_after_s: int = 1
    """What the 503 tells clients to wait before retrying."""
    agent_threads: int | None = None
    """Threads running the agent; None: one per core for the offline model, else `max_concurrency`."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_input_chars", "timeout_s", "max_concurrency", "retry_after_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"Serving limit {name} must be greater than 0, got {getattr(self, name)}.")
        if self.agent_threads is not None and self.agent_threads <= 0:
            raise ConfigError(
                f"Serving limit agent_threads must be greater than 0, got {self.agent_threads}."
            )


class BodyTooLarge(Exception):
    """The request body passed the limit while it was read."""


async def read_body(receive: Receive, *, limit: int) -> bytes | None:
    """Read the whole request body, or None when the client went away first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


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
    """Refuse requests beyond the concurrency and body-size limits; buffer the bodies it admits."""

    def __init__(self, app: ASGIApp, *, limits: ServingLimits) -> None:
        self.app = app
        self.limits = limits
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limits.max_concurrency:
            await self._overloaded(send)
            return
        self.in_flight += 1
        try:
            await self._admitted(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        try:
            if _content_length(scope) > limit:
                raise BodyTooLarge
            body = await read_body(receive, limit=limit)
        except BodyTooLarge:
            message = (
                f"The request body is larger than {limit:,} bytes. Send a shorter conversation, "
                "or start the server with a larger --max-body-mb."
            )
            # Read the rest first: closing on unread data resets the socket and the client loses the answer.
            drained = await _drain(receive, cap=max(DRAIN_CAP, 4 * limit))
            headers = None if drained else {"Connection": "close"}
            await send_error(send, error_info(413, message, code="body_too_large"), headers)
            return
        if body is not None:
            await self.app(scope, replay(body, receive), send)

    async def _overloaded(self, send: Send) -> None:
        limit = self.limits.max_concurrency
        message = (
            f"The server is busy: {limit} requests are in flight, the most it takes at once. "
            f"Retry after {self.limits.retry_after_s} s, or start it with a larger --max-concurrency "
            "or more --workers."
        )
        info = error_info(503, message, code="server_overloaded")
        await send_error(send, info, {"Retry-After": str(self.limits.retry_after_s)})


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
