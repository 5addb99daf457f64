"""OpenAI chat completions (plain and streamed) and `/v1/models` shapes over the same agent.

The request becomes a `ResponsesAgentRequest` and goes to the agent's `predict` / `predict_stream`, as on
`/v1/responses`; answers carry the agent's `custom_outputs` (the cited sources) as an extra top-level
field, on the final chunk when streaming, and `usage` from the agent's token counts. A failure
mid-stream ends the stream with an error chunk, then `[DONE]`. A completion that names a conversation
(`metadata.conversation_id`) is stored in it, streamed or not, as a Responses body under its
`chatcmpl-` id; a stream that fails stores nothing. The routes are in `app.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from mlflow.types.responses import ResponsesAgentRequest

from ragworks.serving import conversations
from ragworks.serving._dispatch import (
    Call,
    Runtime,
    agent_events,
    as_dict,
    record_unstarted,
    responses_usage,
    usage_of,
)
from ragworks.serving._requests import ChatCompletionRequest
from ragworks.serving._served import ServedResponse, TraceEnd
from ragworks.serving.errors import classify, log_failure


def completion_call(call: Call) -> Call:
    """The call with a chat-completion id as its answer's id (the one its trace carries)."""
    return replace(call, response_id=f"chatcmpl-{uuid.uuid4().hex}")


def completion(response: ServedResponse, *, model: str, completion_id: str | None = None) -> dict[str, Any]:
    """A `chat.completion` object from a Responses answer (`completion_id`: the call's, else a fresh one)."""
    message = {"role": "assistant", "content": output_text(response.output)}
    return {
        "id": completion_id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": chat_usage(usage_of(response)),
        "custom_outputs": response.custom_outputs,
    }


def chat_usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    """Responses token counts in chat-completions names (None when the agent reported none)."""
    if not usage:
        return None
    prompt, completion_tokens = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion_tokens)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": total}


def models(name: str) -> dict[str, Any]:
    """The `/v1/models` list: the one model this server answers with."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ragworks"}]}


def output_text(items: list[Any]) -> str:
    """The text of the message items in a Responses output."""
    texts = []
    for item in items:
        data = as_dict(item)
        if data.get("type") == "message":
            texts += [c.get("text", "") for c in data.get("content") or [] if c.get("type") == "output_text"]
    return "".join(texts)


async def chunks(
    runtime: Runtime, chat: ChatCompletionRequest, request: ResponsesAgentRequest, call: Call
) -> AsyncIterator[str]:
    """A streamed chat completion's events, in its conversation if it names one.

    The conversation is opened before the first event, so a store that fails is the request's status.
    """
    request, turn = await conversations.begin(runtime.state, request, response_id=call.response_id)
    return _chunks(runtime, chat, request, call, turn)


async def _chunks(
    runtime: Runtime,
    chat: ChatCompletionRequest,
    request: ResponsesAgentRequest,
    call: Call,
    turn: conversations.Turn | None,
) -> AsyncIterator[str]:
    """A role chunk, text chunks, the stop chunk (and usage), then [DONE]; the turn stored on success."""
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    head: dict[str, Any] = {
        "id": call.response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model or runtime.model_name,
    }
    if include_usage:
        head["usage"] = None  # OpenAI's chunks carry a null usage until the last one

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**head, 'choices': [choice], **extra})}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
    except (GeneratorExit, asyncio.CancelledError):
        record_unstarted(runtime, request, call)
        raise
    custom: dict[str, Any] = {}
    streamed: set[str] = set()
    usage: dict[str, Any] | None = None
    items: list[Any] = []
    trace_id: str | None = None
    try:
        async for event in agent_events(runtime, request, call):
            if isinstance(event, TraceEnd):
                trace_id = event.trace_id
                continue
            data = as_dict(event)
            custom.update(data.get("custom_outputs") or {})
            kind = data.get("type")
            if kind == "response.output_text.delta" and data.get("delta"):
                streamed.add(data.get("item_id", ""))
                yield chunk({"content": data["delta"]})
            elif kind == "response.output_item.done":
                usage = data.get("usage") or usage
                item = data.get("item") or {}
                items.append(item)
                text = "" if item.get("id") in streamed else output_text([item])  # items sent whole
                if text:
                    yield chunk({"content": text})
    except Exception as exc:
        yield f"data: {json.dumps(log_failure(classify(exc), exc, where='chat stream').body())}\n\n"
    else:
        if turn is not None:
            await conversations.finish_async(
                runtime.state, turn, _stored_body(head, items, custom, usage, turn), trace_id
            )
        yield chunk({}, "stop", custom_outputs=custom or None)
        if include_usage:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': chat_usage(usage)})}\n\n"
    yield "data: [DONE]\n\n"


def _stored_body(
    head: dict[str, Any],
    items: list[Any],
    custom: dict[str, Any],
    usage: dict[str, Any] | None,
    turn: conversations.Turn,
) -> dict[str, Any]:
    """What a streamed completion leaves in its conversation: the Responses body a plain one stores."""
    body: dict[str, Any] = {
        "id": head["id"],
        "object": "response",
        "model": head["model"],
        "created_at": float(head["created"]),
        "status": "completed",
        "output": items,
        **conversations.response_fields(turn, None),
    }
    if custom:
        body["custom_outputs"] = custom
    if usage:
        body["usage"] = responses_usage(usage)
    return body
