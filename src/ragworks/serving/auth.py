"""Bearer-token auth: when a token is configured, every route but `/health` and the chat page needs it.

The chat page (`GET /`, its scripts and its style) is static, with no data in it; it must load so the user
can type the token, which the page then sends with every API call.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from ragworks.serving._page import PAGE_PATHS
from ragworks.serving.errors import error_info, send_error

PUBLIC_PATHS = frozenset({"/health", *PAGE_PATHS})


class BearerAuthMiddleware:
    """Answer 401 (OpenAI's error shape) unless `Authorization: Bearer <token>` matches."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or _is_public(scope):
            await self.app(scope, receive, send)
            return
        supplied = _bearer(scope)
        if supplied is None:
            message = (
                "This server needs an API token: send the header 'Authorization: Bearer <token>' "
                "(the openai client's api_key) with the value of the server's RAGWORKS_API_TOKEN."
            )
            await send_error(send, error_info(401, message, code="missing_api_key"), _CHALLENGE)
            return
        if not hmac.compare_digest(supplied, self._token):
            message = "The API token is wrong: use the value of the server's RAGWORKS_API_TOKEN."
            await send_error(send, error_info(401, message, code="invalid_api_key"), _CHALLENGE)
            return
        await self.app(scope, receive, send)


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _is_public(scope: Scope) -> bool:
    return scope["path"] in PUBLIC_PATHS and scope["method"] in ("GET", "HEAD")


def _bearer(scope: Scope) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None
