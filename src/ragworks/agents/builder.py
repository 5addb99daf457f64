"""Build graphs and agents from an `AgentConfig`: the one place config becomes running parts.

Example:
    >>> cfg = {"llm": "offline", "retriever": {"type": "local", "index": "./index"}}
    >>> agent = build_agent(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from ragworks.agents.chat_model import RagChatModel
from ragworks.agents.graphs import build_rag_graph, build_tool_agent
from ragworks.agents.prompt_registry import SystemPrompt, prompt_variables, resolve_system_prompt
from ragworks.agents.responses_agent import RagResponsesAgent
from ragworks.config import AgentConfig
from ragworks.models import get_chat_model
from ragworks.retrieval.local import index_embedder
from ragworks.retrieval.registry import get_retriever
from ragworks.tools.model_filters import check_filterable
from ragworks.tools.registry import agent_tools

ConfigLike = AgentConfig | dict[str, Any] | str | Path | None


def build_graph(
    config: ConfigLike = None, *, system_prompt: SystemPrompt | None = None
) -> CompiledStateGraph:
    """Compile the graph a config describes: the rag graph or the tool-calling agent.

    `system_prompt` is the config's prompt already resolved (default: resolved now; a `prompts:/` URI
    is loaded from MLflow's prompt registry).
    """
    cfg = AgentConfig.load(config)
    prompt = system_prompt or system_prompt_of(cfg)
    llm = get_chat_model(
        answer_model_name(cfg),
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        timeout_s=cfg.llm_options.timeout_s,
        max_retries=cfg.llm_options.max_retries,
    )
    # A real model writes the query variants of `retriever.query`; the offline model cannot write
    # queries, so the retriever keeps its deterministic offline rewriting.
    writer = None if cfg.llm.partition(":")[0] == "offline" else llm
    retriever = get_retriever(cfg.retriever, model=writer)
    if cfg.agent == "rag":
        return build_rag_graph(retriever, llm, system_prompt=prompt.text)
    filterable = check_filterable(cfg.retriever)
    tools = agent_tools(retriever, cfg.tools, mcp_servers=cfg.mcp_servers, filterable=filterable)
    return build_tool_agent(llm, tools, max_steps=cfg.max_steps, system_prompt=prompt.text)


def answer_model_name(cfg: AgentConfig) -> str:
    """The chat model an agent runs: plain `offline` matches with MiniLM only over a MiniLM index.

    Over such an index the model is loaded for the queries anyway; over a hashing or BM25-only
    index, or another backend, plain `offline` stays lexical (MiniLM would add tens of ms of CPU to
    every answer). `offline:minilm` and `offline:lexical` choose explicitly.
    """
    if cfg.llm != "offline":
        return cfg.llm
    minilm = cfg.retriever.type == "local" and index_embedder(Path(cfg.retriever.index)) == "minilm"
    return "offline" if minilm else "offline:lexical"


def build_agent(config: ConfigLike = None) -> RagResponsesAgent:
    """Build the MLflow `ResponsesAgent` for a config (an instance, a dict, a YAML path, or None)."""
    cfg = AgentConfig.load(config)
    prompt = system_prompt_of(cfg)
    linked = [prompt.version] if prompt.version is not None else []
    return RagResponsesAgent(build_graph(cfg, system_prompt=prompt), config=cfg, prompts=linked)


def build_chat_agent(config: ConfigLike = None) -> RagChatModel:
    """Build the chat-completions `ChatModel` for a config (prefer `build_agent`)."""
    cfg = AgentConfig.load(config)
    return RagChatModel(build_graph(cfg), config=cfg)


def system_prompt_of(cfg: AgentConfig) -> SystemPrompt:
    """The system prompt of a config: its text, or the registry prompt it names, loaded and pinned now."""
    return resolve_system_prompt(cfg.system_prompt, variables=prompt_variables(cfg))
