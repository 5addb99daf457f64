"""The one `@invoke` / `@stream` pair registered with MLflow's AgentServer, dispatching to the app's agent.

AgentServer's decorators are process-global and single-use, so they are applied here, once, when this
module is first imported; uvicorn never re-imports it (its `--workers` import the `create_app` factory).
Each app built by `build_app` sets the request's `RequestScope` in a middleware, so several apps (tests)
can share the process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mlflow.genai.agent_server import get_invoke_function, get_stream_function, invoke, stream
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse
from pydantic import BaseModel

from ragworks.errors import ConfigError
from ragworks.serving._bridge import AgentRunner
from ragworks.serving.errors import ErrorInfo, classify
from ragworks.serving.limits import ServingLimits

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """What one app serves: the agent (behind its thread pool), its name and the limits."""

    runner: AgentRunner
    limits: ServingLimits
    model_name: str


@dataclass(slots=True)
class RequestScope:
    """Per-request state that AgentServer's handlers cannot carry for us."""

    runtime: Runtime
    error: BaseException | None = field(default=None)


_scope: ContextVar[RequestScope | None] = ContextVar("ragworks_request_scope", default=None)


def enter_scope(runtime: Runtime) -> None:
    """Bind the current request to `runtime` (called by the app's middleware)."""
    _scope.set(RequestScope(runtime=runtime))


def recorded_error() -> BaseException | None:
    """The agent's error for the current request, if it failed."""
    scope = _scope.get()
    return scope.error if scope is not None else None


def _current() -> RequestScope:
    scope = _scope.get()
    if scope is None:
        raise RuntimeError("No ragworks app is serving this request; build the app with build_app(agent).")
    return scope


async def serve_invoke(request: ResponsesAgentRequest) -> ResponsesAgentResponse:
    """Answer a non-streaming Responses request with the app's agent."""
    scope = _current()
    runtime = scope.runtime
    try:
        response = await runtime.runner.predict(request, timeout=runtime.limits.timeout_s)
    except Exception as exc:
        scope.error = exc  # AgentServer turns it into a 500; the app's handler restores the status
        raise
    response = ResponsesAgentResponse.model_validate(response)
    return response.model_copy(
        update={
            "id": response.id or new_response_id(),
            "model": response.model or runtime.model_name,
            "status": response.status or "completed",
            "created_at": response.created_at or time.time(),
        }
    )


async def serve_stream(request: ResponsesAgentRequest) -> AsyncIterator[dict[str, Any]]:
    """Stream a Responses request: created, the agent's events, then completed (with the sources) or error."""
    runtime = _current().runtime
    head = {
        "id": new_response_id(),
        "object": "response",
        "model": runtime.model_name,
        "created_at": time.time(),
    }
    yield {"type": "response.created", "response": {**head, "status": "in_progress", "output": []}}
    items: list[Any] = []
    custom: dict[str, Any] = {}
    try:
        async for event in runtime.runner.stream(request, timeout=runtime.limits.timeout_s):
            data = as_dict(event)
            if data.get("type") == "response.output_item.done":
                items.append(data.get("item"))
            custom.update(data.get("custom_outputs") or {})
            yield data
    except Exception as exc:
        yield error_event(log_failure(classify(exc), exc))
        return
    done = {**head, "status": "completed", "output": items, "custom_outputs": custom or None}
    yield {"type": "response.completed", "response": done, "custom_outputs": custom or None}


def error_event(info: ErrorInfo) -> dict[str, Any]:
    """A stream's last event when it fails: the Responses `error` event, with OpenAI's `error` object too."""
    return {"type": "error", "code": info.code, "message": info.message, "param": None, **info.body()}


def as_dict(event: Any) -> dict[str, Any]:
    """A stream event as a plain dict."""
    if isinstance(event, BaseModel):
        return event.model_dump(exclude_none=True)
    return dict(event)


def new_response_id() -> str:
    """A fresh Responses API id."""
    return f"resp_{uuid.uuid4().hex}"


def log_failure(info: ErrorInfo, exc: BaseException) -> ErrorInfo:
    """Log an agent failure (server errors with the traceback) and return its info."""
    if info.status >= 500:
        logger.error("Agent failed (%s): %s", info.code, info.message, exc_info=exc)
    else:
        logger.info("Request refused (%s): %s", info.code, info.message)
    return info


def ensure_registered() -> None:
    """Fail with a clear message when another module took AgentServer's single @invoke/@stream slots."""
    if get_invoke_function() is not serve_invoke or get_stream_function() is not serve_stream:
        raise ConfigError(
            "Another module in this process registered @invoke/@stream with MLflow's AgentServer, so "
            "ragworks cannot serve its agent here. Run `ragworks serve` in its own process."
        )


if get_invoke_function() is None:
    invoke()(serve_invoke)
if get_stream_function() is None:
    stream()(serve_stream)
