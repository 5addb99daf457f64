"""Errors in OpenAI's JSON shape, `{"error": {"message", "type", "code"}}`, saying what to fix.

HTTP status   type                    raised by
400           invalid_request_error   malformed JSON, wrong types, empty or too long input, ConfigError
401           authentication_error    missing or wrong bearer token
404 / 405     not_found_error         unknown route or method
413           invalid_request_error   body larger than the limit
502           server_error            RetrievalError, ModelError (a backend failed)
503           server_overloaded       more concurrent requests than the limit (with Retry-After)
504           timeout                 the agent did not answer within the per-request timeout
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from ragworks.errors import ConfigError, ModelError, RagworksError, RetrievalError

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "server_overloaded",
    504: "timeout",
}


class HTTPProblem(Exception):
    """A request the server refuses, with the status, machine code and a message saying what to fix."""

    def __init__(
        self, status: int, message: str, *, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """One error as the client sees it."""

    status: int
    message: str
    code: str
    type: str

    def body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error object."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}


def error_info(status: int, message: str, *, code: str) -> ErrorInfo:
    """Build an `ErrorInfo`, choosing the OpenAI error type from the status."""
    return ErrorInfo(status=status, message=message, code=code, type=_TYPES.get(status, "server_error"))


def classify(exc: BaseException) -> ErrorInfo:
    """Map any exception to the status and message the client gets (ConfigError 400, RetrievalError 502)."""
    if isinstance(exc, HTTPProblem):
        return error_info(exc.status, str(exc), code=exc.code)
    if isinstance(exc, ConfigError):
        return error_info(400, str(exc), code="config_error")
    if isinstance(exc, RetrievalError):
        return error_info(502, str(exc), code="retrieval_error")
    if isinstance(exc, ModelError):
        return error_info(502, str(exc), code="model_error")
    if isinstance(exc, RagworksError):
        return error_info(500, str(exc), code="agent_error")
    if isinstance(exc, TimeoutError):
        return error_info(
            504, "The agent did not answer in time; retry, or raise the server's --timeout.", code="timeout"
        )
    return error_info(
        500, f"The agent failed: {type(exc).__name__}: {exc}. See the server log.", code="internal_error"
    )


def error_response(info: ErrorInfo, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response carrying the error."""
    return JSONResponse(info.body(), status_code=info.status, headers=headers)


def error_bytes(info: ErrorInfo) -> bytes:
    """The error body encoded for raw ASGI responses."""
    return json.dumps(info.body()).encode()


def install_error_handlers(app: FastAPI, recorded: Callable[[], BaseException | None]) -> None:
    """Make every error the app returns use the OpenAI shape; `recorded` returns the agent's own error."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPProblem)
        return error_response(classify(exc), exc.headers)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        agent_error = recorded()
        if agent_error is not None:  # AgentServer wraps every agent failure in a 500; restore the cause
            return error_response(classify(agent_error))
        return error_response(_http_info(request, exc), dict(exc.headers or {}))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(error_info(400, _validation_message(exc), code="invalid_request"))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        info = classify(exc)
        if info.status >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, info.message, exc_info=exc)
        return error_response(info)

    app.add_exception_handler(HTTPProblem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)


def _http_info(request: Request, exc: StarletteHTTPException) -> ErrorInfo:
    if exc.status_code == 404:
        message = (
            f"No route {request.method} {request.url.path}. The server answers POST /v1/responses, "
            "/v1/chat/completions, /responses, /invocations; GET /health, /agent/info, /."
        )
        return error_info(404, message, code="not_found")
    if exc.status_code == 405:
        return error_info(
            405, f"{request.method} is not allowed on {request.url.path}.", code="method_not_allowed"
        )
    code = "invalid_request" if exc.status_code < 500 else "internal_error"
    return error_info(exc.status_code, str(exc.detail), code=code)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return "Invalid request: " + "; ".join(parts) + "."


async def send_error(send: Send, info: ErrorInfo, headers: dict[str, str] | None = None) -> None:
    """Answer a raw ASGI request with an error, before it reaches the app."""
    body = error_bytes(info)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": info.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
