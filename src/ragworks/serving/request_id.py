"""The `x-request-id` of every answer: the client's own (when well formed) or a fresh one, always echoed.

`RequestIdMiddleware` is plain ASGI and wraps the whole app, so every answer carries the header: the
agent's, the error handler's 4xx/5xx, and the 401/408/413/503 that auth and limits send before the app
runs. A missing or malformed id is replaced in the request's own headers, so the routes, the trace tag
(`ragworks.request_id`), the trace's `client_request_id` and the answer all name the same id.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
"""What a client may send as its id (anything else is replaced: the id lands in logs and traces)."""


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def request_id_of(scope: Scope) -> str | None:
    """The request id in a request's headers, when it is well formed."""
    for key, value in scope.get("headers", ()):
        if key == _HEADER:
            return value.decode() if _VALID.fullmatch(value) else None
    return None


class RequestIdMiddleware:
    """Give each HTTP request a valid `x-request-id` and echo it on the answer, whoever sends it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        if request_id is None:
            request_id = new_request_id()
            kept = [(k, v) for k, v in scope.get("headers", ()) if k != _HEADER]
            # In place, not a copy: the outer middleware reads what routing adds to this scope.
            scope["headers"] = [*kept, (_HEADER, request_id.encode())]
        echoed = (_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(key.lower() == _HEADER for key, _ in headers):
                    message = {**message, "headers": [*headers, echoed]}
            await send(message)

        await self.app(scope, receive, send_with_id)
