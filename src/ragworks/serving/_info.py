"""What `/agent/info` adds to AgentServer's answer: the agent, model and index this server runs."""

from __future__ import annotations

from typing import Any

INFO_KEY = "ragworks"
"""The one key added to AgentServer's `/agent/info` object (its own keys stay as they are)."""


def describe_agent(agent: object, *, name: str, conversations: bool) -> dict[str, Any]:
    """The chat page's empty state: agent name, model, index (path and backend), conversations kept.

    Args:
        agent: The served agent; its `config` (an `AgentConfig`) is read when it has one.
        name: The agent's name as the server reports it (`model` in answers).
        conversations: Whether the server keeps conversations, so clients may send only
            `previous_response_id` and the new turn instead of the whole history.
    """
    config = getattr(agent, "config", None)
    retriever = getattr(config, "retriever", None)
    index = None
    if retriever is not None:
        index = {"path": str(retriever.index), "backend": str(retriever.type)}
    llm = getattr(config, "llm", None)
    return {
        "agent": name,
        "model": llm if isinstance(llm, str) else None,
        "index": index,
        "conversations": conversations,
    }
