"""Request bodies: parsed from JSON once, validated once, with 400 messages that say what to send instead.

`decode_json` is the only JSON parse of a body and `validate` the only pydantic validation of it; both are
bounded (nesting depth, number sizes, unpaired surrogates) so hostile bodies get a 400, never a 500.
A Responses body becomes the `ResponsesAgentRequest` the agent is called with; a chat-completions body
is validated as `ChatCompletionRequest` and mapped to the same request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mlflow.types.responses import ResponsesAgentRequest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragworks.serving.errors import HTTPProblem

EXAMPLE = '{"input": [{"role": "user", "content": "What is ragworks?"}]}'
CHAT_EXAMPLE = '{"messages": [{"role": "user", "content": "What is ragworks?"}]}'
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a body may have (400 beyond it)."""
MAX_NUMBER_DIGITS = 308
"""Longest number literal, in characters (400 beyond it): no legal field needs more than a double."""
_ROLES = frozenset({"system", "developer", "user", "assistant"})
_Model = TypeVar("_Model", bound=BaseModel)


def bad_request(message: str, *, code: str = "invalid_request") -> HTTPProblem:
    """A 400 problem."""
    return HTTPProblem(400, message, code=code)


class _HostileJSON(ValueError):
    """A number or nesting the parser refuses (raised from its hooks)."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _HostileJSON(f"a number has {len(text):,} digits; at most {MAX_NUMBER_DIGITS} are accepted")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text) if len(text) <= MAX_NUMBER_DIGITS else math.inf
    if not math.isfinite(value):
        raise _HostileJSON(f"the number {text[:40]}{'...' if len(text) > 40 else ''} is out of range")
    return value


def _parse_constant(name: str) -> float:
    raise _HostileJSON(f"{name} is not a JSON number")


def decode_json(raw: bytes, *, example: str, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Parse a JSON object body once (400 when empty, malformed, hostile or not an object)."""
    if not raw.strip():
        raise bad_request(f"The request body is empty. Send a JSON object such as {example}.")
    try:
        data = json.loads(
            raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except _HostileJSON as exc:
        raise bad_request(f"The request body is refused: {exc}.", code="invalid_json") from None
    except RecursionError:
        raise _too_deep(max_depth) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(
            f"The request body is not valid JSON ({exc}). Send UTF-8 JSON such as {example}.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise bad_request(
            f"The request body must be a JSON object, not {type(data).__name__}. Send e.g. {example}."
        )
    _check_tree(data, max_depth=max_depth)
    return data


def _too_deep(max_depth: int) -> HTTPProblem:
    return bad_request(
        f"The request body nests arrays or objects more than {max_depth} levels deep; flatten it.",
        code="invalid_json",
    )


def _check_tree(data: dict[str, Any], *, max_depth: int) -> None:
    """Refuse nesting beyond `max_depth` and strings with unpaired surrogates (they cannot be stored)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
            for key in value:
                _check_text(key)
        elif isinstance(value, list):
            children = value
        else:
            if isinstance(value, str):
                _check_text(value)
            continue
        if depth > max_depth:
            raise _too_deep(max_depth)
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(
            "The request body has a string with an unpaired UTF-16 surrogate escape (such as \\ud800); "
            "send valid Unicode text.",
            code="invalid_json",
        ) from None


def validate(model: type[_Model], data: dict[str, Any], *, example: str) -> _Model:
    """Validate a parsed body once into `model` (400 naming the wrong fields)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(f"{_validation_message(exc)}\nSend e.g. {example}.") from None
    except (TypeError, ValueError) as exc:  # a validator of the model raised outside pydantic's errors
        raise bad_request(f"Invalid request: {_short(exc)}. Send e.g. {example}.") from None


def _validation_message(exc: ValidationError) -> str:
    lines = ["Invalid request:"]
    for err in exc.errors(include_url=False)[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        got = f" (got {_short(err['input'])})" if "input" in err and err["type"] != "missing" else ""
        lines.append(f"  {where}: {err['msg']}{got}")
    return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    """A bounded repr: a 1 MB input must not come back (or go to the log) in an error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedResponses:
    """A Responses body: the agent's request and whether the client asked for a stream."""

    request: ResponsesAgentRequest
    stream: bool
    previous_response_id: str | None = None
    """OpenAI's field: the stored response whose conversation this request continues."""


def parse_responses(raw: bytes, *, max_input_chars: int) -> ParsedResponses:
    """Parse and validate a Responses body; accept what OpenAI allows and MLflow does not.

    OpenAI's Responses API takes `input` as a string and `instructions` as a separate field; both
    become messages of the one `ResponsesAgentRequest`.
    """
    data = decode_json(raw, example=EXAMPLE)
    stream = data.pop("stream", False)
    if not isinstance(stream, bool):
        raise bad_request(f"'stream' must be true or false, got {_short(stream)}.")
    if "input" not in data:
        raise bad_request(f"The request has no 'input'. Send e.g. {EXAMPLE}.")
    if isinstance(data["input"], str):
        data["input"] = [{"role": "user", "content": data["input"]}]
    instructions = data.pop("instructions", None)
    if isinstance(instructions, str) and instructions and isinstance(data["input"], list):
        data["input"] = [{"role": "system", "content": instructions}, *data["input"]]
    previous = data.pop("previous_response_id", None)
    if previous is not None and not (isinstance(previous, str) and previous):
        raise bad_request(f"'previous_response_id' must be a response id string, got {_short(previous)}.")
    request = validate(ResponsesAgentRequest, data, example=EXAMPLE)
    check_input(data["input"], max_input_chars=max_input_chars)  # the parsed dicts: no re-serialising
    return ParsedResponses(request=request, stream=stream, previous_response_id=previous)


def check_input(items: list[Any], *, max_input_chars: int) -> None:
    """Refuse an empty conversation, one without text, or one longer than the limit."""
    if not items:
        raise bad_request(f"'input' is empty: send at least one message, e.g. {EXAMPLE}.", code="empty_input")
    size = sum(_text_length(item) for item in items)
    if size > max_input_chars:
        raise bad_request(
            f"The input is {size:,} characters long; this server takes at most {max_input_chars:,}. "
            "Shorten the conversation, or start the server with a larger --max-input-chars.",
            code="input_too_long",
        )
    if size == 0:
        raise bad_request(
            "The input has no text: put the question in a message's 'content'.", code="empty_input"
        )


def _text_length(item: Any) -> int:
    if not isinstance(item, dict):
        return 0
    content = item.get("content")
    if isinstance(content, str):
        return len(content)
    total = 0
    for part in content if isinstance(content, list) else []:
        text = part.get("text") if isinstance(part, dict) else None
        total += len(text) if isinstance(text, str) else 0
    extra = item.get("output") or item.get("arguments") or ""
    return total + (len(extra) if isinstance(extra, str) else 0)


class ChatMessage(BaseModel):
    """One chat-completions message; extra OpenAI fields (name, tool_calls, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: `include_usage` adds a last chunk with the token counts."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The parts of OpenAI's chat-completions request this server uses; the rest is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    """OpenAI's metadata; `conversation_id` names the conversation (thread) the exchange is stored in."""
    store: bool | None = None


def parse_chat(raw: bytes, *, max_input_chars: int) -> tuple[ChatCompletionRequest, ResponsesAgentRequest]:
    """Parse and validate a chat-completions body once; the ResponsesAgent request that answers it."""
    data = decode_json(raw, example=CHAT_EXAMPLE)
    chat = validate(ChatCompletionRequest, data, example=CHAT_EXAMPLE)
    messages = [{"role": m.role, "content": _chat_text(m.content)} for m in chat.messages if m.role in _ROLES]
    check_input(messages, max_input_chars=max_input_chars)
    named = (chat.metadata or {}).get("conversation_id")
    conversation = named if isinstance(named, str) and named else None
    context = {"conversation_id": conversation, "user_id": chat.user} if chat.user or conversation else None
    # Chat clients resend the whole history, so a conversation is stored only when named or asked for.
    store = bool(conversation) if chat.store is None else chat.store
    # Built from fields validated just above: plain strings, roles from a closed set.
    request = ResponsesAgentRequest(input=messages, context=context, store=store)  # type: ignore[arg-type]
    return chat, request


def _chat_text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or [] if p.get("type") in ("text", "input_text"))
