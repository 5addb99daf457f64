"""The chat server: MLflow's AgentServer plus what it lacks.

AgentServer gives `/invocations`, `/responses`, `/agent/info`, `/health`, SSE streaming (`"stream": true`)
and trace ids (header `x-mlflow-return-trace-id: true`). This module adds `/v1/responses` (so
`OpenAI(base_url="http://host:port/v1")` works), `/v1/chat/completions`, `/v1/models`, bearer-token auth,
request limits, OpenAI-shaped errors and the chat page at `/`.

Example:
    >>> from ragworks.agents import build_agent
    >>> app = build_app(build_agent("agent.yaml"))            # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from mlflow.genai.agent_server import AgentServer
from mlflow.pyfunc import ResponsesAgent
from starlette.types import ASGIApp, Receive, Scope, Send

from ragworks.config import env_flag, get_settings
from ragworks.errors import ConfigError
from ragworks.serving import _dispatch, openai_compat
from ragworks.serving._bridge import AgentRunner
from ragworks.serving._requests import EXAMPLE, load_object, normalize_responses
from ragworks.serving.auth import BearerAuthMiddleware
from ragworks.serving.errors import HTTPProblem, classify, install_error_handlers, send_error
from ragworks.serving.limits import LimitsMiddleware, ServingLimits, replay
from ragworks.trace_export.batch import setup_server_tracing

logger = logging.getLogger(__name__)

SPEC_ENV = "RAGWORKS_SERVE_SPEC"
"""The environment variable through which `ragworks serve` hands its options to `create_app` in workers."""
RESPONSES_PATHS = frozenset({"/responses", "/invocations"})


def build_app(
    agent: ResponsesAgent,
    *,
    limits: ServingLimits | None = None,
    api_token: str | None = None,
    model_name: str | None = None,
) -> FastAPI:
    """Serve `agent` over HTTP: AgentServer's routes plus the OpenAI routes, auth, limits and the chat page.

    Args:
        agent: Any MLflow `ResponsesAgent` (ragworks' `RagResponsesAgent`, or one loaded from a logged model).
        limits: Body size, input length, timeout and concurrency; the defaults of `ServingLimits` if None.
        api_token: The bearer token clients must send; None reads `RAGWORKS_API_TOKEN` (unset: no auth).
        model_name: The name reported as `model` in answers; defaults to the agent's config name.

    Returns:
        The FastAPI app, ready for `uvicorn.run`.
    """
    _dispatch.ensure_registered()
    limits = limits or ServingLimits()
    token = api_token if api_token is not None else get_settings().api_token
    runtime = _dispatch.Runtime(
        runner=AgentRunner(agent, workers=limits.agent_threads or _default_threads(agent, limits)),
        limits=limits,
        model_name=model_name or _agent_name(agent),
    )
    app = AgentServer(agent_type="ResponsesAgent").app
    app.title = "ragworks"
    app.state.ragworks = runtime
    install_error_handlers(app, _dispatch.recorded_error)
    app.include_router(openai_compat.router)
    _add_chat_page(app)
    app.add_middleware(ResponsesRequestMiddleware, runtime=runtime)
    app.add_middleware(LimitsMiddleware, limits=limits)
    if token:
        app.add_middleware(BearerAuthMiddleware, token=token)
    app.router.add_event_handler("shutdown", runtime.runner.close)
    return app


class ResponsesRequestMiddleware:
    """Bind each request to the app's agent; check and normalise Responses bodies; map /v1/responses."""

    def __init__(self, app: ASGIApp, *, runtime: _dispatch.Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        _dispatch.enter_scope(self.runtime)
        if scope["path"] == "/v1/responses":  # AgentServer's /responses, under OpenAI's /v1 prefix
            scope = {**scope, "path": "/responses", "raw_path": b"/responses"}
        if scope["method"] != "POST" or scope["path"] not in RESPONSES_PATHS:
            await self.app(scope, receive, send)
            return
        message = await receive()  # LimitsMiddleware already buffered the whole body
        try:
            data = load_object(message.get("body", b""), example=EXAMPLE)
            body = normalize_responses(data, max_input_chars=self.runtime.limits.max_input_chars)
        except HTTPProblem as problem:
            await send_error(send, classify(problem))
            return
        await self.app(scope, replay(json.dumps(body).encode(), receive), send)


def _add_chat_page(app: FastAPI) -> None:
    page = files("ragworks.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(page)


def _default_threads(agent: ResponsesAgent, limits: ServingLimits) -> int:
    """One thread per core for the offline model (CPU-bound: more threads only starve the event loop)."""
    if getattr(getattr(agent, "config", None), "llm", None) == "offline":
        return min(limits.max_concurrency, os.cpu_count() or 1)
    return limits.max_concurrency  # remote models wait on the network: a thread per request in flight


def _agent_name(agent: ResponsesAgent) -> str:
    config = getattr(agent, "config", None)
    name = getattr(config, "name", None)
    return name if isinstance(name, str) and name else "ragworks-agent"


def load_agent(
    *, config: str | Path | dict[str, Any] | None = None, model_uri: str | None = None
) -> ResponsesAgent:
    """The agent to serve: built from a config, or loaded from a logged model (`models:/`, `runs:/`)."""
    if config is not None and model_uri is not None:
        raise ConfigError("Give either a config or a model URI, not both.")
    if model_uri is not None:
        return _load_logged(model_uri)
    from ragworks.agents import build_agent

    agent: ResponsesAgent = build_agent(config)
    return agent


def _load_logged(model_uri: str) -> ResponsesAgent:
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise ConfigError(
            f"Could not load the model {model_uri!r}: {exc}. Check the URI (models:/<name>/<version> or "
            "runs:/<run_id>/<path>) and MLFLOW_TRACKING_URI."
        ) from exc
    agent = _raw_model(model)
    if not isinstance(agent, ResponsesAgent):
        raise ConfigError(
            f"The model {model_uri!r} is a {type(agent).__name__}, not a ResponsesAgent; "
            "log it with `ragworks log-model` (or mlflow.pyfunc.log_model of a ResponsesAgent)."
        )
    return agent


def _raw_model(model: Any) -> object:
    """The Python object behind a loaded pyfunc model (`get_raw_model` for ResponsesAgents)."""
    try:
        return model.get_raw_model()
    except NotImplementedError:
        try:
            return model.unwrap_python_model()
        except Exception:  # not a Python model at all (e.g. a flavor such as sklearn)
            return model


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSpec:
    """Everything `create_app` needs, passed to uvicorn workers as JSON in `RAGWORKS_SERVE_SPEC`."""

    config: str | None = None
    model_uri: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise for the environment."""
        return json.dumps(asdict(self))


def create_app() -> FastAPI:
    """The uvicorn factory `ragworks.serving.app:create_app`: reads the spec `ragworks serve` left in env."""
    raw = env_flag(SPEC_ENV)
    spec = ServeSpec(**json.loads(raw)) if raw else ServeSpec()
    agent = load_agent(config=spec.config, model_uri=spec.model_uri)
    setup_server_tracing()  # this worker's traces: stored in batches, none dropped
    return build_app(agent, limits=ServingLimits(**spec.limits))
