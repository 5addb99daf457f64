"""Conversions between Responses items, chat-completions messages and LangChain messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call

from ragworks.errors import ConfigError

_ROLES: dict[str, type[BaseMessage]] = {
    "user": HumanMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
    "developer": SystemMessage,
}


def content_text(content: Any) -> str:
    """The text of a message content: a string, or a list of text / input_text / output_text parts."""
    # Any: content comes from pydantic models of three libraries, each with its own part types.
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "".join(parts)


def message_text(message: BaseMessage) -> str:
    """The text of a LangChain message."""
    return content_text(message.content)


def message_to_dict(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a chat-completions style dict, for span inputs and outputs."""
    role = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}.get(
        message.type, message.type
    )
    out: dict[str, Any] = {"role": role, "content": message_text(message)}
    if isinstance(message, AIMessage) and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
            }
            for c in message.tool_calls
        ]
    if isinstance(message, ToolMessage):
        out["tool_call_id"] = message.tool_call_id
    return out


def responses_items_to_messages(items: Iterable[Mapping[str, Any]]) -> list[BaseMessage]:
    """Convert Responses API input items (messages, function calls and outputs) to LangChain messages."""
    messages: list[BaseMessage] = []
    for item in items:
        kind = item.get("type") or "message"
        if kind == "message":
            messages.append(_role_message(item.get("role", "user"), item.get("content")))
        elif kind == "function_call":
            _append_tool_call(messages, item)
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output)
            messages.append(ToolMessage(text, tool_call_id=str(item.get("call_id"))))
        # reasoning and other item types carry nothing the graphs use
    return messages


def chat_to_messages(items: Sequence[Mapping[str, Any]]) -> list[BaseMessage]:
    """Convert chat-completions messages (dicts) to LangChain messages."""
    messages: list[BaseMessage] = []
    for item in items:
        role = item.get("role", "user")
        if role == "tool":
            messages.append(
                ToolMessage(content_text(item.get("content")), tool_call_id=str(item.get("tool_call_id")))
            )
            continue
        message = _role_message(role, item.get("content"))
        for call in item.get("tool_calls") or []:
            function = call.get("function", {})
            _append_tool_call([message], {**function, "call_id": call.get("id")})
        messages.append(message)
    return messages


def _role_message(role: str, content: Any) -> BaseMessage:
    try:
        cls = _ROLES[role]
    except KeyError:
        raise ConfigError(
            f"Unknown message role {role!r}; use user, assistant, system or developer."
        ) from None
    return cls(content=content_text(content))


def _append_tool_call(messages: list[BaseMessage], item: Mapping[str, Any]) -> None:
    arguments = item.get("arguments") or "{}"
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    except json.JSONDecodeError:
        args = {"input": arguments}
    call = tool_call(name=str(item.get("name")), args=args, id=str(item.get("call_id")))
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage):
        last.tool_calls = [*last.tool_calls, call]
    else:
        messages.append(AIMessage(content="", tool_calls=[call]))


def split_system(messages: Sequence[BaseMessage]) -> tuple[str, list[BaseMessage]]:
    """Separate the system messages (joined) from the conversation."""
    system = "\n\n".join(message_text(m) for m in messages if isinstance(m, SystemMessage))
    return system, [m for m in messages if not isinstance(m, SystemMessage)]
