"""Errors in OpenAI's JSON shape, `{"error": {"message", "type", "code"}}`, saying what to fix.

HTTP status   type                    raised by
400           invalid_request_error   malformed JSON, wrong types, empty or too long input, ConfigError
401           authentication_error    missing or wrong bearer token
404 / 405     not_found_error         unknown route or method
409           conflict_error          feedback for a trace still waiting to be stored (Retry-After)
413           invalid_request_error   body larger than the limit
500           server_error            an unexpected failure (logged with its traceback, once)
502           server_error            RetrievalError, ModelError (a backend failed)
503           server_overloaded       more concurrent requests than the limit, or the model said it is
                                      overloaded (ModelError.status 503); Retry-After when known
504           timeout                 the agent (or the model: ModelError.status 504) did not answer in time

`install_error_handlers` installs the one handler every route's failure goes through.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

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
    409: "conflict_error",
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
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers the error needs (Retry-After)."""

    def body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error object."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}


def error_info(
    status: int, message: str, *, code: str, headers: dict[str, str] | None = None
) -> ErrorInfo:
    """Build an `ErrorInfo`, choosing the OpenAI error type from the status."""
    kind = _TYPES.get(status, "server_error")
    return ErrorInfo(status=status, message=message, code=code, type=kind, headers=headers or {})


def classify(exc: BaseException) -> ErrorInfo:
    """Map any exception to the status and message the client gets (ConfigError 400, RetrievalError 502)."""
    if isinstance(exc, HTTPProblem):
        return error_info(exc.status, str(exc), code=exc.code, headers=exc.headers)
    if isinstance(exc, ConfigError):
        return error_info(400, str(exc), code="config_error")
    if isinstance(exc, RetrievalError):
        return error_info(502, str(exc), code="retrieval_error")
    if isinstance(exc, ModelError):
        return _model_error(exc)
    if isinstance(exc, RagworksError):
        return error_info(500, str(exc), code="agent_error")
    if isinstance(exc, TimeoutError):
        return error_info(
            504, "The agent did not answer in time; retry, or raise the server's --timeout.", code="timeout"
        )
    return error_info(
        500, f"The agent failed: {type(exc).__name__}: {exc}. See the server log.", code="internal_error"
    )


_MODEL_CODES = {503: "model_overloaded", 504: "model_timeout"}


def _model_error(exc: ModelError) -> ErrorInfo:
    """502 unless the model said it was overloaded (503) or timed out (504); Retry-After when it said."""
    status = getattr(exc, "status", None)
    status = status if status in _MODEL_CODES else 502
    retry_after = getattr(exc, "retry_after", None)
    headers = {}
    if isinstance(retry_after, (int, float)) and math.isfinite(retry_after) and retry_after >= 0:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))  # HTTP wants whole seconds
    code = _MODEL_CODES.get(status, "model_error")
    kind = "server_error" if status == 502 else _TYPES[status]
    return ErrorInfo(status=status, message=str(exc), code=code, type=kind, headers=headers)


def error_response(info: ErrorInfo) -> JSONResponse:
    """A JSON response carrying the error (and its headers)."""
    return JSONResponse(info.body(), status_code=info.status, headers=info.headers or None)


def error_bytes(info: ErrorInfo) -> bytes:
    """The error body encoded for raw ASGI responses."""
    return json.dumps(info.body()).encode()


def install_error_handlers(app: FastAPI) -> None:
    """Route the framework's errors (404, 405, body validation) through `handle_error` too."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return handle_error(request, exc)

    for kind in (HTTPProblem, RagworksError, TimeoutError, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(kind, on_error)


def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one handler: any failure of a request becomes OpenAI's error shape with the mapped status.

    Routes call it for what the agent raises (so an unexpected error is logged here once, with its
    traceback, instead of being re-raised into the server's log as well).
    """
    if isinstance(exc, StarletteHTTPException):
        info = _http_info(request, exc)
    elif isinstance(exc, RequestValidationError):
        info = error_info(400, _validation_message(exc), code="invalid_request")
    else:
        info = log_failure(classify(exc), exc, where=f"{request.method} {request.url.path}")
    return error_response(info)


def log_failure(info: ErrorInfo, exc: BaseException, *, where: str) -> ErrorInfo:
    """Log a failure once: server errors with the traceback, backend failures and refusals in one line."""
    if info.status == 500:
        logger.error("%s failed (%s): %s", where, info.code, info.message, exc_info=exc)
    elif info.status >= 500:
        logger.warning("%s failed (%s): %s", where, info.code, info.message)
    else:
        logger.info("%s refused (%s): %s", where, info.code, info.message)
    return info


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
    return error_info(exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {}))


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
    raw += [(k.lower().encode(), v.encode()) for k, v in {**info.headers, **(headers or {})}.items()]
    await send({"type": "http.response.start", "status": info.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
