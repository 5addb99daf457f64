"""Agents: the LangGraph graphs, the offline model, and the MLflow adapters.

Example:
    >>> from ragworks.agents import build_agent
    >>> agent = build_agent({"retriever": {"type": "local", "index": "./index", "k": 5}})  # doctest: +SKIP
    >>> agent.predict({"input": [{"role": "user", "content": "What is ragworks?"}]})      # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragworks._imports import lazy_attributes

# Loaded on first use: the tools package imports the prompt and tracing modules of this package.
_LAZY = {
    "AgentState": "ragworks.agents.graphs",
    "OfflineChatModel": "ragworks.agents.offline",
    "RagChatModel": "ragworks.agents.chat_model",
    "RagResponsesAgent": "ragworks.agents.responses_agent",
    "build_agent": "ragworks.agents.builder",
    "build_chat_agent": "ragworks.agents.builder",
    "build_graph": "ragworks.agents.builder",
    "build_rag_graph": "ragworks.agents.graphs",
    "build_tool_agent": "ragworks.agents.graphs",
    "log_agent": "ragworks.agents.logged_model",
}

if TYPE_CHECKING:
    from ragworks.agents.builder import build_agent, build_chat_agent, build_graph
    from ragworks.agents.chat_model import RagChatModel
    from ragworks.agents.graphs import AgentState, build_rag_graph, build_tool_agent
    from ragworks.agents.logged_model import log_agent
    from ragworks.agents.offline import OfflineChatModel
    from ragworks.agents.responses_agent import RagResponsesAgent


__getattr__ = lazy_attributes("ragworks.agents", _LAZY)


__all__ = [
    "AgentState",
    "OfflineChatModel",
    "RagChatModel",
    "RagResponsesAgent",
    "build_agent",
    "build_chat_agent",
    "build_graph",
    "build_rag_graph",
    "build_tool_agent",
    "log_agent",
]
