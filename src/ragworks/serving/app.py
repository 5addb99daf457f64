"""The chat server: one FastAPI app that keeps MLflow AgentServer's HTTP contract and adds OpenAI's routes.

    POST /responses  /v1/responses  /invocations   Responses API (`"stream": true` for SSE); trace ids
                                                    with the header `x-mlflow-return-trace-id: true`
    POST /v1/chat/completions                       OpenAI chat completions, plain and streamed
    GET  /v1/models  /agent/info  /health  /        model list, AgentServer's info, health, chat page

A body is parsed from JSON once and validated once (`_requests`), off the event loop when it is large;
the agent runs once (`_dispatch`), its AGENT span the root of the request's trace; every failure goes
through one exception handler (`errors.install_error_handlers`). Auth and limits are ASGI middleware.

Example:
    >>> from ragworks.agents import build_agent
    >>> app = build_app(build_agent("agent.yaml"))            # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)          # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
import mlflow
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from mlflow.pyfunc import ResponsesAgent

from ragworks.agents.loading import load_agent
from ragworks.config import env_flag, get_settings
from ragworks.serving import _openapi, openai_compat
from ragworks.serving._bridge import AgentRunner
from ragworks.serving._dispatch import Call, Runtime, answer, responses_body, responses_stream
from ragworks.serving._info import INFO_KEY, describe_agent
from ragworks.serving._page import add_chat_page
from ragworks.serving._requests import parse_chat, parse_responses
from ragworks.serving._served import ServedAgent
from ragworks.serving.auth import BearerAuthMiddleware
from ragworks.serving.conversations import add_conversation_routes
from ragworks.serving.conversations import attach as attach_state
from ragworks.serving.errors import handle_error, install_error_handlers
from ragworks.serving.feedback import add_feedback_routes
from ragworks.serving.limits import LimitsMiddleware, ServingLimits
from ragworks.serving.metrics import install_metrics
from ragworks.serving.state import ConversationStore
from ragworks.trace_export.batch import setup_server_tracing

logger = logging.getLogger(__name__)

SPEC_ENV = "RAGWORKS_SERVE_SPEC"
"""The environment variable through which `ragworks serve` hands its options to `create_app` in workers."""
RETURN_TRACE_HEADER = "x-mlflow-return-trace-id"
REQUEST_ID_HEADER = "x-request-id"
OFF_LOOP_BYTES = 64 * 1024
"""Bodies larger than this are parsed on a worker thread, so a few large ones cannot stall /health."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_Parsed = TypeVar("_Parsed")


def build_app(
    agent: ResponsesAgent,
    *,
    limits: ServingLimits | None = None,
    api_token: str | None = None,
    model_name: str | None = None,
    state: ConversationStore | str | None = None,
) -> FastAPI:
    """Serve `agent` over HTTP: AgentServer's routes plus the OpenAI routes, auth, limits and the chat page.

    Args:
        agent: Any MLflow `ResponsesAgent` (ragworks' `RagResponsesAgent`, or one loaded from a logged model).
        limits: Body size, input length, timeout and concurrency; the defaults of `ServingLimits` if None.
        api_token: The bearer token clients must send; None reads `RAGWORKS_API_TOKEN` (unset: no auth).
        model_name: The name reported as `model` in answers; defaults to the agent's config name.
        state: The conversation store, or its setting (`serving.state`); None reads the agent's config.

    Returns:
        The FastAPI app, ready for `uvicorn.run`.
    """
    limits = limits or ServingLimits()
    token = api_token if api_token is not None else get_settings().api_token
    threads = limits.agent_threads or _default_threads(agent, limits)
    served, store, opened = attach_state(agent, state)
    runtime = Runtime(
        runner=AgentRunner(ServedAgent(served), workers=threads),  # type: ignore[arg-type]  # same methods
        limits=limits,
        model_name=model_name or _agent_name(agent),
        state=store,
    )
    app = FastAPI(title="ragworks", summary="A retrieval-augmented agent: OpenAI Responses and chat APIs.")
    app.state.ragworks = runtime
    install_error_handlers(app)
    _add_routes(app, runtime)
    add_feedback_routes(app)  # POST /v1/feedback: an MLflow assessment on the answer's trace
    _openapi.document(app)
    app.add_middleware(LimitsMiddleware, limits=limits)
    if token:
        app.add_middleware(BearerAuthMiddleware, token=token)
    install_metrics(app)  # outermost: /metrics, request ids on every answer, refusals counted too
    app.router.add_event_handler("shutdown", runtime.runner.close)
    if store is not None and opened:
        app.router.add_event_handler("shutdown", store.close)
    return app


def _add_routes(app: FastAPI, runtime: Runtime) -> None:
    async def responses(request: Request) -> Any:
        raw = await request.body()
        limit = runtime.limits.max_input_chars
        parsed = await _parse(lambda: parse_responses(raw, max_input_chars=limit), size=len(raw))
        call = _call(request)
        headers = {REQUEST_ID_HEADER: call.request_id}
        # OpenAI's route stores answers unless told not to; MLflow's routes only when asked (conversations)
        previous, store = parsed.previous_response_id, request.url.path == "/v1/responses"
        if parsed.stream:
            events = await responses_stream(
                runtime, parsed.request, call, previous_response_id=previous, store_default=store
            )
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        response = await answer(
            runtime, parsed.request, call, previous_response_id=previous, store_default=store
        )
        return JSONResponse(responses_body(runtime, response, call), headers=headers)

    async def chat_completions(request: Request) -> Any:
        raw = await request.body()
        limit = runtime.limits.max_input_chars
        chat, agent_request = await _parse(lambda: parse_chat(raw, max_input_chars=limit), size=len(raw))
        call = openai_compat.completion_call(_call(request))  # its trace carries the chatcmpl- id
        headers = {REQUEST_ID_HEADER: call.request_id}
        if chat.stream:
            chunks = await openai_compat.chunks(runtime, chat, agent_request, call)
            stream_headers = {**headers, "Cache-Control": "no-cache"}
            return StreamingResponse(chunks, media_type="text/event-stream", headers=stream_headers)
        response = await answer(runtime, agent_request, call)
        model = chat.model or runtime.model_name
        body = openai_compat.completion(response, model=model, completion_id=call.response_id)
        return JSONResponse(body, headers=headers)

    for path in _openapi.RESPONSES_PATHS:
        app.add_api_route(path, _guarded(responses), methods=["POST"], **_openapi.responses_route(path))
    app.add_api_route(
        "/v1/chat/completions", _guarded(chat_completions), methods=["POST"], **_openapi.chat_route()
    )
    _add_info_routes(app, runtime)
    add_conversation_routes(app, runtime.state)


def _add_info_routes(app: FastAPI, runtime: Runtime) -> None:
    info = {
        "name": env_flag("DATABRICKS_APP_NAME") or "mlflow_agent_server",  # AgentServer's answer
        "use_case": "agent",
        "mlflow_version": mlflow.__version__,
        "agent_api": "responses",
    }
    agent = getattr(runtime.runner.agent, "agent", runtime.runner.agent)  # inside ServedAgent
    about = describe_agent(agent, name=runtime.model_name, conversations=runtime.state is not None)

    @app.get("/agent/info", summary="What AgentServer reports about the agent, and ragworks' own facts")
    async def agent_info() -> dict[str, Any]:
        return {**info, INFO_KEY: about}

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/v1/models", summary="The one model this server answers with")
    async def list_models() -> dict[str, Any]:
        return openai_compat.models(runtime.model_name)

    add_chat_page(app)


def _guarded(route: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
    """Answer whatever the route raises through the one error handler."""

    @functools.wraps(route)
    async def run(request: Request) -> Any:
        try:
            return await route(request)
        except Exception as exc:
            return handle_error(request, exc)

    return run


async def _parse(parse: Callable[[], _Parsed], *, size: int) -> _Parsed:
    """Run the parse here for small bodies, on a worker thread for large ones."""
    if size <= OFF_LOOP_BYTES:
        return parse()
    return await anyio.to_thread.run_sync(parse)


def _call(request: Request) -> Call:
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    return Call(
        request_id=supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex,
        return_trace_id=request.headers.get(RETURN_TRACE_HEADER, "").lower() == "true",
        headers=dict(request.headers),
    )


def _default_threads(agent: ResponsesAgent, limits: ServingLimits) -> int:
    """One thread per core for the offline model (CPU-bound: more threads only starve the event loop)."""
    if str(getattr(getattr(agent, "config", None), "llm", "")).partition(":")[0] == "offline":
        return min(limits.max_concurrency, os.cpu_count() or 1)
    return limits.max_concurrency  # remote models wait on the network: a thread per request in flight


def _agent_name(agent: ResponsesAgent) -> str:
    config = getattr(agent, "config", None)
    name = getattr(config, "name", None)
    return name if isinstance(name, str) and name else "ragworks-agent"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSpec:
    """Everything `create_app` needs, passed to uvicorn workers as JSON in `RAGWORKS_SERVE_SPEC`."""

    config: str | None = None
    model_uri: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    """The MLflow experiment for the traces (`--experiment`, or the config's `tracking.experiment`)."""

    def to_json(self) -> str:
        """Serialise for the environment."""
        return json.dumps(asdict(self))


def spec_from_env() -> ServeSpec:
    """The spec `ragworks serve --workers N` left in `RAGWORKS_SERVE_SPEC` (the defaults when unset)."""
    raw = env_flag(SPEC_ENV)
    return ServeSpec(**json.loads(raw)) if raw else ServeSpec()


def create_app() -> FastAPI:
    """The uvicorn factory `ragworks.serving.app:create_app`: reads the spec `ragworks serve` left in env."""
    spec = spec_from_env()
    agent = load_agent(config=spec.config, model_uri=spec.model_uri)
    setup_server_tracing(experiment=spec.experiment)  # this worker's traces: batched, none dropped
    return build_app(agent, limits=ServingLimits(**spec.limits))


__all__ = ["ServeSpec", "build_app", "create_app", "load_agent"]
