"""What `/openapi.json` says about the POST routes: the request and response bodies they take and give.

The routes read their bodies themselves (one parse, one validation, in `_requests`), so FastAPI cannot
infer the bodies; the models here are declared for the schema only, through `openapi_extra`, and
their JSON schemas are added to the document's components once.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse
from mlflow.types.responses_helpers import Message, OutputItem
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ragworks.serving._requests import ChatCompletionRequest

RESPONSES_PATHS = ("/v1/responses", "/responses", "/invocations")
_REF = "#/components/schemas/{model}"


class ResponsesRequestBody(ResponsesAgentRequest):
    """A Responses request as this server accepts it: MLflow's request, plus OpenAI's string `input`,
    `instructions` and `stream`."""

    input: str | list[Message | OutputItem]  # type: ignore[assignment]  # wider than MLflow's, on purpose
    instructions: str | None = Field(default=None, description="A system message put before the input.")
    stream: bool | None = Field(default=False, description="Answer as server-sent events.")
    previous_response_id: str | None = Field(
        default=None, description="A stored response whose conversation this request continues."
    )


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {...}}`."""

    error: ErrorDetail


class ChatChoiceMessage(BaseModel):
    """The assistant's message."""

    role: str
    content: str | None = None


class ChatChoice(BaseModel):
    """One choice of a chat completion (this server gives one)."""

    index: int
    message: ChatChoiceMessage
    finish_reason: str | None = None
    logprobs: Any = None  # Any: always null here, OpenAI's type for it is large


class ChatUsage(BaseModel):
    """Token counts in chat-completions names."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """A `chat.completion` answer; `custom_outputs` carries the cited sources."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage | None = None
    custom_outputs: dict[str, Any] | None = None


_SCHEMAS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (ResponsesRequestBody, "validation"),
    (ChatCompletionRequest, "validation"),
    (ResponsesAgentResponse, "serialization"),
    (ChatCompletion, "serialization"),
    (ErrorBody, "serialization"),
]
_ERRORS = {
    "400": "The body is not valid JSON, or not a valid request (the message says what to send).",
    "401": "Missing or wrong bearer token (when the server has one).",
    "413": "The body is larger than the server's limit.",
    "502": "A backend (retriever or model) failed.",
    "503": "The server, or the model, is overloaded; see Retry-After.",
    "504": "The agent did not answer within the request timeout.",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _responses(ok: type[BaseModel], stream: str) -> dict[int | str, dict[str, Any]]:
    error = {"content": {"application/json": {"schema": _ref(ErrorBody)}}}
    return {
        200: {
            "description": "The answer; with `stream: true`, server-sent events ending in `data: [DONE]`.",
            "content": {
                "application/json": {"schema": _ref(ok)},
                "text/event-stream": {"schema": {"type": "string", "description": stream}},
            },
        },
        **{code: {"description": text, **error} for code, text in _ERRORS.items()},
    }


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model)}}}}


def responses_route(path: str) -> dict[str, Any]:
    """`add_api_route` arguments documenting a Responses route."""
    return {
        "summary": "Create a response (OpenAI Responses API, MLflow AgentServer)",
        "operation_id": "create_response" + path.replace("/", "_"),
        "openapi_extra": _body(ResponsesRequestBody),
        "responses": _responses(ResponsesAgentResponse, "Responses stream events as `data: {json}`."),
        "response_model": None,
    }


def chat_route() -> dict[str, Any]:
    """`add_api_route` arguments documenting the chat-completions route."""
    return {
        "summary": "Create a chat completion (OpenAI chat completions API)",
        "operation_id": "create_chat_completion",
        "openapi_extra": _body(ChatCompletionRequest),
        "responses": _responses(ChatCompletion, "`chat.completion.chunk` objects as `data: {json}`."),
        "response_model": None,
    }


def document(app: FastAPI) -> None:
    """Build the app's schema once, with the body models' schemas among its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            _, defs = models_json_schema(_SCHEMAS, ref_template=_REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it
