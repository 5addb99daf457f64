"""The two agent graphs, both compiled LangGraph `StateGraph`s over any `BaseChatModel`.

    build_rag_graph:   START -> retrieve -> generate -> END
    build_tool_agent:  START -> agent -> (tools -> agent)* -> END, or -> limit -> END after max_steps

Example:
    >>> graph = build_rag_graph(retriever, OfflineChatModel())                     # doctest: +SKIP
    >>> state = graph.invoke({"messages": [("user", "How do I log an agent?")]})  # doctest: +SKIP
    >>> state["messages"][-1].content  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from ragworks.agents._messages import message_text, split_system
from ragworks.agents._worker import text_sink
from ragworks.agents.offline import OfflineChatModel
from ragworks.agents.prompts import (
    CONDENSE_PROMPT,
    RAG_SYSTEM_PROMPT,
    TOOL_SYSTEM_PROMPT,
    condense_keywords,
    context_message,
)
from ragworks.agents.tracing import traced_chat, traced_retrieve, traced_tool
from ragworks.tools.retriever_tool import render_results

logger = logging.getLogger(__name__)

Condense = Literal["auto", "llm", "keywords", "none"]
NODE_GENERATE = "generate"
NODE_AGENT = "agent"
NODE_LIMIT = "limit"


class AgentState(TypedDict):
    """The state both graphs share."""

    messages: Annotated[list[AnyMessage], add_messages]
    documents: NotRequired[Annotated[list[Document], operator.add]]
    query: NotRequired[str]
    steps: NotRequired[int]
    usage: NotRequired[UsageMetadata]
    """Token usage of the model calls of a step whose replies are not in `messages` (the rewrite)."""


def _conversation(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The text turns of a conversation: user messages and assistant answers (no tool traffic)."""
    return [
        m
        for m in messages
        if isinstance(m, HumanMessage) or (isinstance(m, AIMessage) and not m.tool_calls and message_text(m))
    ]


def _system(default: str, override: str | None, messages: Sequence[BaseMessage]) -> SystemMessage:
    request_system, _ = split_system(messages)
    text = override or default
    return SystemMessage("\n\n".join(t for t in (text, request_system) if t))


def _question(turns: Sequence[BaseMessage]) -> str:
    for m in reversed(turns):
        if isinstance(m, HumanMessage):
            return message_text(m)
    return ""


def condense_query(
    llm: BaseChatModel,
    messages: Sequence[BaseMessage],
    *,
    mode: Condense = "auto",
    on_usage: Callable[[UsageMetadata], None] | None = None,
) -> str:
    """The retrieval query for the last user turn, made standalone when earlier turns exist.

    `on_usage` receives the token usage of the rewrite, when a model call made one.
    """
    turns = _conversation(messages)
    question = _question(turns)
    earlier = [message_text(m) for m in turns if isinstance(m, HumanMessage)][:-1]
    if not earlier or mode == "none":
        return question
    if mode == "keywords" or (mode == "auto" and isinstance(llm, OfflineChatModel)):
        return condense_keywords(question, earlier)
    prompt = [SystemMessage(CONDENSE_PROMPT), *turns]
    reply = traced_chat(llm, prompt, name="condense_question", model=llm, tags=["nostream"])
    if on_usage is not None and reply.usage_metadata:
        on_usage(reply.usage_metadata)
    return message_text(reply).strip() or question


def answer_call(
    llm: Runnable[Any, BaseMessage],
    prompt: Sequence[BaseMessage],
    *,
    name: str,
    model: BaseChatModel,
    config: RunnableConfig,
) -> AIMessage:
    """One answer-node model call: streamed into the run's text sink when it has one, else invoked."""
    return traced_chat(llm, prompt, name=name, model=model, on_text=text_sink(config))


def build_rag_graph(
    retriever: BaseRetriever,
    llm: BaseChatModel,
    *,
    system_prompt: str | None = None,
    condense: Condense = "auto",
) -> CompiledStateGraph:
    """Compile the retrieve -> generate graph: one retrieval, then a cited answer."""

    def retrieve(state: AgentState) -> dict[str, Any]:
        usage: list[UsageMetadata] = []
        query = condense_query(llm, state["messages"], mode=condense, on_usage=usage.append)
        update: dict[str, Any] = {"query": query, "documents": traced_retrieve(retriever, query)}
        return {**update, "usage": usage[0]} if usage else update

    def generate(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        turns = _conversation(state["messages"])
        docs = state.get("documents", [])
        prompt = [
            _system(RAG_SYSTEM_PROMPT, system_prompt, state["messages"]),
            *turns[:-1],
            context_message(_question(turns), docs),
        ]
        reply = answer_call(llm, prompt, name=NODE_GENERATE, model=llm, config=config)
        return {"messages": [reply]}

    graph = StateGraph(AgentState)
    graph.add_node("retrieve", retrieve)
    graph.add_node(NODE_GENERATE, generate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", NODE_GENERATE)
    graph.add_edge(NODE_GENERATE, END)
    return graph.compile(name="ragworks-rag")


def build_tool_agent(
    llm: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    max_steps: int = 6,
    system_prompt: str | None = None,
) -> CompiledStateGraph:
    """Compile a tool-calling loop: the model calls tools until it answers or `max_steps` model calls."""
    bound = llm.bind_tools(list(tools))
    by_name = {t.name: t for t in tools}

    def agent(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        conversation = [m for m in state["messages"] if not isinstance(m, SystemMessage)]
        prompt = [_system(TOOL_SYSTEM_PROMPT, system_prompt, state["messages"]), *conversation]
        reply = answer_call(bound, prompt, name=NODE_AGENT, model=llm, config=config)
        return {"messages": [reply], "steps": state.get("steps", 0) + 1}

    def route(state: AgentState) -> str:
        last = state["messages"][-1]
        if not isinstance(last, AIMessage) or not last.tool_calls:
            return END
        return "tools" if state.get("steps", 0) < max_steps else NODE_LIMIT

    def run_tools(state: AgentState) -> dict[str, Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        known = len(state.get("documents", []))
        messages: list[ToolMessage] = []
        found: list[Document] = []
        for call in last.tool_calls:
            message, docs = _run_tool(by_name, call, start=known + len(found) + 1)
            messages.append(message)
            found.extend(docs)
        return {"messages": messages, "documents": found}

    def limit(state: AgentState) -> dict[str, Any]:
        return {"messages": step_limit_messages(state["messages"], max_steps)}

    graph = StateGraph(AgentState)
    graph.add_node(NODE_AGENT, agent)
    graph.add_node("tools", run_tools)
    graph.add_node(NODE_LIMIT, limit)
    graph.add_edge(START, NODE_AGENT)
    graph.add_conditional_edges(NODE_AGENT, route, ["tools", NODE_LIMIT, END])
    graph.add_edge("tools", NODE_AGENT)
    graph.add_edge(NODE_LIMIT, END)
    compiled = graph.compile(name="ragworks-tool-agent")
    return compiled.with_config({"recursion_limit": 2 * max_steps + 5})


def _run_tool(
    by_name: dict[str, BaseTool], call: ToolCall, *, start: int
) -> tuple[ToolMessage, list[Document]]:
    """Run one tool call; any failure becomes an error ToolMessage the model can read and act on."""
    tool = by_name.get(call["name"])
    call_id = str(call.get("id"))
    if tool is None:
        text = (
            f"Error: there is no tool named {call['name']!r}. Available tools: {', '.join(sorted(by_name))}."
        )
        return ToolMessage(text, tool_call_id=call_id, name=call["name"], status="error"), []
    try:
        message = traced_tool(tool, {**call, "type": "tool_call"})
    except Exception as exc:  # the model sees the error and may retry; the run goes on
        logger.info("Tool %s failed: %s", call["name"], type(exc).__name__)
        text = (
            f"Error: {call['name']} failed: {exc}. Check the arguments and try again, or answer without it."
        )
        return ToolMessage(text, tool_call_id=call_id, name=call["name"], status="error"), []
    docs = _documents(message.artifact)
    if docs:
        # number sources across all retrievals of the run, so [n] stays unique
        message = message.model_copy(update={"content": render_results(docs, start=start)})
    return message, docs


def _documents(artifact: object) -> list[Document]:
    if isinstance(artifact, list) and artifact and all(isinstance(d, Document) for d in artifact):
        return artifact
    return []


def step_limit_messages(messages: Sequence[BaseMessage], max_steps: int) -> list[BaseMessage]:
    """Close unanswered tool calls and explain that the step limit stopped the agent."""
    last = messages[-1]
    skipped: list[BaseMessage] = []
    if isinstance(last, AIMessage):
        skipped = [
            ToolMessage("Not run: the step limit was reached.", tool_call_id=str(c.get("id")), name=c["name"])
            for c in last.tool_calls
        ]
    found = [message_text(m) for m in messages if isinstance(m, ToolMessage) and m.status != "error"]
    text = (
        f"I stopped after {max_steps} model calls without reaching a final answer "
        "(raise max_steps in the config to allow more)."
    )
    if found:
        text += f" The last thing I found was:\n\n{found[-1][:1500]}"
    return [*skipped, AIMessage(text)]
