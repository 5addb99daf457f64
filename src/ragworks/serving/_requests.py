"""Request bodies: parse, check and normalise them, with 400 messages that say what to send instead."""

from __future__ import annotations

import json
from typing import Any, Literal

from mlflow.types.responses import ResponsesAgentRequest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragworks.config import format_validation_error
from ragworks.serving.errors import HTTPProblem

EXAMPLE = '{"input": [{"role": "user", "content": "What is ragworks?"}]}'
CHAT_EXAMPLE = '{"messages": [{"role": "user", "content": "What is ragworks?"}]}'
_ROLES = frozenset({"system", "developer", "user", "assistant"})


def bad_request(message: str, *, code: str = "invalid_request") -> HTTPProblem:
    """A 400 problem."""
    return HTTPProblem(400, message, code=code)


def load_object(raw: bytes, *, example: str) -> dict[str, Any]:
    """Parse a JSON object body (400 when empty, malformed or not an object)."""
    if not raw.strip():
        raise bad_request(f"The request body is empty. Send a JSON object such as {example}.")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(
            f"The request body is not valid JSON ({exc}). Send a JSON object such as {example}.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise bad_request(
            f"The request body must be a JSON object, not {type(data).__name__}. Send e.g. {example}."
        )
    return data


def normalize_responses(data: dict[str, Any], *, max_input_chars: int) -> dict[str, Any]:
    """Check a Responses body; accept what OpenAI allows and MLflow does not (string input, instructions)."""
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request(f"'stream' must be true or false, got {stream!r}.")
    if "input" not in data:
        raise bad_request(f"The request has no 'input'. Send e.g. {EXAMPLE}.")
    body = dict(data)
    if isinstance(body["input"], str):
        body["input"] = [{"role": "user", "content": body["input"]}]
    instructions = body.pop("instructions", None)
    if isinstance(instructions, str) and instructions and isinstance(body["input"], list):
        body["input"] = [{"role": "system", "content": instructions}, *body["input"]]
    fields = {k: v for k, v in body.items() if k != "stream"}
    try:
        request = ResponsesAgentRequest(**fields)
    except ValidationError as exc:
        raise bad_request(
            format_validation_error(exc, source="request") + f"\nSend e.g. {EXAMPLE}."
        ) from None
    except (TypeError, ValueError) as exc:
        raise bad_request(f"Invalid request: {exc}. Send e.g. {EXAMPLE}.") from None
    check_input(request, max_input_chars=max_input_chars)
    return body


def check_input(request: ResponsesAgentRequest, *, max_input_chars: int) -> None:
    """Refuse an empty conversation, one without text, or one longer than the limit."""
    if not request.input:
        raise bad_request(f"'input' is empty: send at least one message, e.g. {EXAMPLE}.", code="empty_input")
    size = sum(_text_length(item.model_dump()) for item in request.input)
    if size == 0:
        raise bad_request(
            "The input has no text: put the question in a message's 'content'.", code="empty_input"
        )
    if size > max_input_chars:
        raise bad_request(
            f"The input is {size:,} characters long; this server takes at most {max_input_chars:,}. "
            "Shorten the conversation, or start the server with a larger --max-input-chars.",
            code="input_too_long",
        )


def _text_length(item: dict[str, Any]) -> int:
    content = item.get("content")
    if isinstance(content, str):
        return len(content)
    total = 0
    for part in content if isinstance(content, list) else []:
        text = part.get("text") if isinstance(part, dict) else None
        total += len(text) if isinstance(text, str) else 0
    return total + len(str(item.get("output") or item.get("arguments") or ""))


class ChatMessage(BaseModel):
    """One chat-completions message; extra OpenAI fields (name, tool_calls, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The parts of OpenAI's chat-completions request this server uses; the rest is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    user: str | None = None


def parse_chat(raw: bytes, *, max_input_chars: int) -> tuple[ChatCompletionRequest, ResponsesAgentRequest]:
    """Parse a chat-completions body and the ResponsesAgent request that answers it."""
    data = load_object(raw, example=CHAT_EXAMPLE)
    try:
        chat = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        message = format_validation_error(exc, source="request") + f"\nSend e.g. {CHAT_EXAMPLE}."
        raise bad_request(message) from None
    messages = [{"role": m.role, "content": _chat_text(m.content)} for m in chat.messages if m.role in _ROLES]
    request = ResponsesAgentRequest(input=messages)  # type: ignore[arg-type]  # pydantic coerces the dicts
    check_input(request, max_input_chars=max_input_chars)
    return chat, request


def _chat_text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or [] if p.get("type") in ("text", "input_text"))
