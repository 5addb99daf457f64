"""Answer one parsed request with the agent: once, as JSON or as a Responses event stream.

The agent's AGENT span is the trace root; `trace_scope` adds the request id (a tag), the session and the
user to that trace through `mlflow.tracing.context`, which the worker thread inherits. Streams keep
AgentServer's framing: `data: {json}\\n\\n` per event, `{"trace_id": ...}` before the end when the
client sent `x-mlflow-return-trace-id: true`, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse
from pydantic import BaseModel

from ragworks.serving import conversations
from ragworks.serving._bridge import AgentRunner
from ragworks.serving._served import ServedResponse, TraceEnd
from ragworks.serving.errors import ErrorInfo, classify, log_failure
from ragworks.serving.limits import ServingLimits
from ragworks.serving.state import ConversationStore

logger = logging.getLogger(__name__)

REQUEST_ID_TAG = "ragworks.request_id"
"""The trace tag holding the request id (the `x-request-id` header the client sent, or a fresh one)."""
RESPONSE_ID_TAG = "ragworks.response_id"
"""The trace tag holding the Responses id the answer was served with (what feedback names)."""
DONE = "data: [DONE]\n\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """What one app serves: the agent (behind its thread pool), its name and the limits."""

    runner: AgentRunner
    limits: ServingLimits
    model_name: str
    state: ConversationStore | None = None
    """The conversation store (`serving.state`); None: every request carries its whole conversation."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One HTTP request's facts that reach the trace and the answer."""

    request_id: str
    return_trace_id: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    response_id: str = field(default_factory=lambda: new_response_id())
    """Chosen before the agent runs, so the trace can carry it (the `RESPONSE_ID_TAG` tag)."""


def _set_request_headers(headers: dict[str, str]) -> None:
    """Make the headers visible to agents through MLflow's `get_request_headers()`, as AgentServer does."""
    try:
        from mlflow.genai.agent_server import set_request_headers
    except ImportError:  # an MLflow without the agent server: agents cannot ask for headers there
        return
    set_request_headers(headers)


@contextlib.contextmanager
def trace_scope(call: Call, request: ResponsesAgentRequest) -> Iterator[None]:
    """The trace the agent opens inside this block carries the request id, session and user."""
    _set_request_headers(call.headers)
    context = request.context
    scope = getattr(mlflow.tracing, "context", None)
    if scope is None:  # older MLflow: the agent's own annotations (session, user) still apply
        yield
        return
    with scope(
        tags={REQUEST_ID_TAG: call.request_id, RESPONSE_ID_TAG: call.response_id},
        session_id=context.conversation_id if context else None,
        user=context.user_id if context else None,
    ):
        yield


async def answer(
    runtime: Runtime,
    request: ResponsesAgentRequest,
    call: Call,
    *,
    previous_response_id: str | None = None,
    store_default: bool = False,
) -> ServedResponse:
    """Run the agent once (in its conversation, if any: `conversations`); errors go to the one handler."""
    request, turn = await conversations.begin(
        runtime.state,
        request,
        response_id=call.response_id,
        previous=previous_response_id,
        store_default=store_default,
    )
    with trace_scope(call, request):
        response = await runtime.runner.predict(request, timeout=runtime.limits.timeout_s)
    assert isinstance(response, ServedResponse)  # the runner drives a ServedAgent
    if turn is not None:
        response = response.model_copy(update=conversations.response_fields(turn, response.metadata))
        body = responses_body(runtime, response, dataclasses.replace(call, return_trace_id=False))
        await conversations.finish_async(runtime.state, turn, body, response.trace_id)
    return response


def responses_body(runtime: Runtime, response: ServedResponse, call: Call) -> dict[str, Any]:
    """The JSON answer of /responses and /invocations: AgentServer's shape, defaults filled in."""
    body = response.model_dump(exclude_none=True)
    body.setdefault("id", call.response_id)
    body.setdefault("model", runtime.model_name)
    body.setdefault("status", "completed")
    body.setdefault("created_at", time.time())
    if call.return_trace_id and response.trace_id:
        body["metadata"] = (body.get("metadata") or {}) | {"trace_id": response.trace_id}
    return body


def record_unstarted(runtime: Runtime, request: ResponsesAgentRequest, call: Call) -> None:
    """The trace of a stream closed before its agent was called (the client left at the first event)."""
    with trace_scope(call, request):
        runtime.runner.record_unrun(request, stream=True)


async def agent_events(runtime: Runtime, request: ResponsesAgentRequest, call: Call) -> AsyncIterator[Any]:
    """The agent's stream events, then a `TraceEnd`; the stream is closed (and traced) when abandoned."""
    stream = runtime.runner.stream(request, timeout=runtime.limits.timeout_s)
    try:
        with trace_scope(call, request):  # the runner hands this context to its thread on the first step
            first = await anext(stream, None)
        if first is None:
            return
        yield first
        async for event in stream:
            yield event
    finally:
        await stream.aclose()  # type: ignore[attr-defined]  # the runner's stream is an async generator


async def responses_stream(
    runtime: Runtime,
    request: ResponsesAgentRequest,
    call: Call,
    *,
    previous_response_id: str | None = None,
    store_default: bool = False,
) -> AsyncIterator[str]:
    """A Responses event stream: created, the agent's events, completed (or error), then [DONE].

    Awaited before the response starts, so an unknown `previous_response_id` is a plain 400.
    """
    request, turn = await conversations.begin(
        runtime.state,
        request,
        response_id=call.response_id,
        previous=previous_response_id,
        store_default=store_default,
    )
    return _responses_events(runtime, request, call, turn)


async def _responses_events(
    runtime: Runtime, request: ResponsesAgentRequest, call: Call, turn: conversations.Turn | None
) -> AsyncIterator[str]:
    head = {
        "id": call.response_id,
        "object": "response",
        "model": runtime.model_name,
        "created_at": time.time(),
    }
    if turn is not None:
        head |= conversations.response_fields(turn, None)
    try:
        yield sse({"type": "response.created", "response": {**head, "status": "in_progress", "output": []}})
    except (GeneratorExit, asyncio.CancelledError):
        record_unstarted(runtime, request, call)
        raise
    items: list[Any] = []
    custom: dict[str, Any] = {}
    usage: dict[str, Any] | None = None
    trace_id: str | None = None
    try:
        async for event in agent_events(runtime, request, call):
            if isinstance(event, TraceEnd):
                trace_id = event.trace_id
                continue
            data = as_dict(event)
            if data.get("type") == "response.output_item.done":
                items.append(data.get("item"))
                usage = data.get("usage") or usage
            custom.update(data.get("custom_outputs") or {})
            yield sse(data)
    except Exception as exc:
        yield sse(error_event(log_failure(classify(exc), exc, where="stream")))
    else:
        done = {**head, "status": "completed", "output": items, "custom_outputs": custom or None}
        if usage:
            done["usage"] = responses_usage(usage)
        await conversations.finish_async(runtime.state, turn, done, trace_id)
        yield sse({"type": "response.completed", "response": done, "custom_outputs": custom or None})
    if call.return_trace_id and trace_id:
        yield sse({"trace_id": trace_id})
    yield DONE


def sse(event: dict[str, Any]) -> str:
    """One server-sent event as AgentServer writes it (top-level nulls dropped, like its validator)."""
    return f"data: {json.dumps({k: v for k, v in event.items() if v is not None})}\n\n"


def error_event(info: ErrorInfo) -> dict[str, Any]:
    """A stream's last event when it fails: the Responses `error` event, with OpenAI's `error` object too."""
    return {"type": "error", "code": info.code, "message": info.message, "param": None, **info.body()}


def as_dict(event: Any) -> dict[str, Any]:
    """A stream event as a plain dict."""
    if isinstance(event, BaseModel):
        return event.model_dump(exclude_none=True)
    return dict(event)


def usage_of(response: ResponsesAgentResponse) -> dict[str, Any] | None:
    """The token counts the agent reported, as a plain dict (None when it did not)."""
    usage: Any = response.usage  # Any: a model or a dict, depending on the MLflow version
    if isinstance(usage, BaseModel):
        return usage.model_dump(exclude_none=True)
    return dict(usage) if isinstance(usage, dict) else None


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Token counts in the Responses API's full shape (the detail objects OpenAI always sends)."""
    return {
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
        **usage,
    }


def new_response_id() -> str:
    """A fresh Responses API id."""
    return f"resp_{uuid.uuid4().hex}"
