"""OpenAI chat completions (`/v1/chat/completions`, plain and streamed) and `/v1/models` over the same agent.

The request becomes a `ResponsesAgentRequest` and goes to the agent's `predict` / `predict_stream`, as on
`/v1/responses`; answers carry the agent's `custom_outputs` (the cited sources) as an extra top-level
field, on the final chunk when streaming. A failure mid-stream ends the stream with an error chunk.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

from ragworks.serving._dispatch import Runtime, as_dict, log_failure
from ragworks.serving._requests import parse_chat
from ragworks.serving.errors import classify, error_response

router = APIRouter()


def runtime_of(request: Request) -> Runtime:
    """The runtime `build_app` stored on the app."""
    runtime: Runtime = request.app.state.ragworks
    return runtime


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
    """OpenAI chat completions over the agent."""
    runtime = runtime_of(request)
    chat, agent_request = parse_chat(await request.body(), max_input_chars=runtime.limits.max_input_chars)
    model = chat.model or runtime.model_name
    if chat.stream:
        return StreamingResponse(
            _chunks(runtime, agent_request, model),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    try:
        response = await runtime.runner.predict(agent_request, timeout=runtime.limits.timeout_s)
    except Exception as exc:
        return error_response(log_failure(classify(exc), exc))
    return JSONResponse(completion(ResponsesAgentResponse.model_validate(response), model=model))


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The one model this server answers with."""
    name = runtime_of(request).model_name
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ragworks"}]}


def completion(response: ResponsesAgentResponse, *, model: str) -> dict[str, Any]:
    """A `chat.completion` object from a Responses answer."""
    message = {"role": "assistant", "content": output_text(response.output)}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": None,
        "custom_outputs": response.custom_outputs,
    }


def output_text(items: list[Any]) -> str:
    """The text of the message items in a Responses output."""
    texts = []
    for item in items:
        data = as_dict(item)
        if data.get("type") == "message":
            texts += [c.get("text", "") for c in data.get("content") or [] if c.get("type") == "output_text"]
    return "".join(texts)


async def _chunks(runtime: Runtime, request: ResponsesAgentRequest, model: str) -> AsyncIterator[str]:
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**head, 'choices': [choice], **extra})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    custom: dict[str, Any] = {}
    streamed: set[str] = set()
    try:
        async for event in runtime.runner.stream(request, timeout=runtime.limits.timeout_s):
            data = as_dict(event)
            custom.update(data.get("custom_outputs") or {})
            kind = data.get("type")
            if kind == "response.output_text.delta" and data.get("delta"):
                streamed.add(data.get("item_id", ""))
                yield chunk({"content": data["delta"]})
            elif kind == "response.output_item.done":
                item = data.get("item") or {}
                text = "" if item.get("id") in streamed else output_text([item])  # items sent whole
                if text:
                    yield chunk({"content": text})
    except Exception as exc:
        yield f"data: {json.dumps(log_failure(classify(exc), exc).body())}\n\n"
    else:
        yield chunk({}, "stop", custom_outputs=custom or None)
    yield "data: [DONE]\n\n"
