"""The rag graph and the tool-calling loop, driven by the offline and the scripted models."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from ragworks.agents.graphs import build_rag_graph, build_tool_agent
from ragworks.agents.offline import OfflineChatModel
from ragworks.agents.prompts import parse_sources
from ragworks.retrieval import get_retriever
from ragworks.testing import ScriptedChatModel
from ragworks.tools import agent_tools, make_retriever_tool

pytestmark = pytest.mark.usefixtures("tracing_off")


def _retriever(index: str):
    return get_retriever({"type": "local", "index": index, "k": 2})


def _call(name: str, call_id: str = "c1", **args: object) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])


def test_rag_graph_answers_offline_with_citations(docs_index: str) -> None:
    graph = build_rag_graph(_retriever(docs_index), OfflineChatModel())
    state = graph.invoke({"messages": [HumanMessage("How are logged agents loaded?")]})
    answer = state["messages"][-1].content
    assert "mlflow.pyfunc.load_model [" in answer
    assert state["documents"] and state["query"] == "How are logged agents loaded?"


def test_rag_graph_prompt_delimits_sources_and_keeps_history(docs_index: str) -> None:
    model = ScriptedChatModel(responses=["standalone query about the index", "It is a folder [1]."])
    graph = build_rag_graph(_retriever(docs_index), model, system_prompt="Be brief.")
    history = [HumanMessage("How does ragworks store the index?"), AIMessage("In a folder [1].")]
    state = graph.invoke({"messages": [*history, HumanMessage("And its format?")]})
    condense_prompt, answer_prompt = model.history
    assert "standalone search query" in condense_prompt[0].content
    assert state["query"] == "standalone query about the index"
    assert answer_prompt[0].content == "Be brief."
    assert [m.content for m in answer_prompt[1:3]] == [
        "How does ragworks store the index?",
        "In a folder [1].",
    ]
    assert parse_sources(answer_prompt[-1].content)
    assert answer_prompt[-1].content.endswith("Question: And its format?")


def test_rag_graph_condenses_follow_ups_offline(docs_index: str) -> None:
    graph = build_rag_graph(_retriever(docs_index), OfflineChatModel())
    history = [HumanMessage("How does ragworks store the index?"), AIMessage("In a folder [1].")]
    state = graph.invoke({"messages": [*history, HumanMessage("Does it use pickle?")]})
    assert state["query"] == "Does it use pickle? How ragworks store index"
    assert "pickle [1]" in state["messages"][-1].content


def test_tool_agent_calls_a_tool_then_answers(docs_index: str) -> None:
    model = ScriptedChatModel(responses=[_call("search_documents", query="index format"), "JSON files [1]."])
    graph = build_tool_agent(model, agent_tools(_retriever(docs_index)), max_steps=4)
    state = graph.invoke({"messages": [HumanMessage("What format is the index?")]})
    kinds = [type(m).__name__ for m in state["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert parse_sources(state["messages"][2].content)[0][0] == 1
    assert state["messages"][-1].content == "JSON files [1]."
    assert len(state["documents"]) == 2
    assert isinstance(model.history[1][-1], ToolMessage)


class Order(BaseModel):
    order_id: int


@tool
def lookup_order(order: Order) -> str:
    """Look up an order."""
    raise ValueError(f"order {order.order_id} does not exist")


def test_tool_exception_becomes_a_tool_message() -> None:
    model = ScriptedChatModel(
        responses=[_call("lookup_order", order={"order_id": 7}), "Sorry, no such order."]
    )
    graph = build_tool_agent(model, [lookup_order], max_steps=3)
    state = graph.invoke({"messages": [HumanMessage("Where is order 7?")]})
    error = state["messages"][2]
    assert isinstance(error, ToolMessage) and error.status == "error"
    assert "order 7 does not exist" in error.content
    assert state["messages"][-1].content == "Sorry, no such order."


def test_unknown_tool_and_bad_arguments_are_reported_to_the_model() -> None:
    replies = [_call("nope"), _call("lookup_order", order={"order_id": "x"}), "Done."]
    graph = build_tool_agent(ScriptedChatModel(responses=replies), [lookup_order], max_steps=5)
    messages = graph.invoke({"messages": [HumanMessage("hi")]})["messages"]
    errors = [m.content for m in messages if isinstance(m, ToolMessage)]
    assert "no tool named 'nope'" in errors[0]
    assert "order_id" in errors[1]


def test_step_limit_stops_the_loop_with_a_clear_message(docs_index: str) -> None:
    model = ScriptedChatModel(responses=[_call("search_documents", query="index")], repeat_last=True)
    graph = build_tool_agent(model, [make_retriever_tool(_retriever(docs_index))], max_steps=2)
    messages = graph.invoke({"messages": [HumanMessage("loop forever")]})["messages"]
    assert len(model.history) == 2
    assert "stopped after 2 model calls" in messages[-1].content
    assert "Ragworks stores the index" in messages[-1].content
    dangling = messages[-2]
    assert isinstance(dangling, ToolMessage) and "step limit" in dangling.content


def test_tool_agent_works_offline(docs_index: str) -> None:
    graph = build_tool_agent(OfflineChatModel(), agent_tools(_retriever(docs_index)), max_steps=3)
    messages = graph.invoke({"messages": [HumanMessage("How are logged agents loaded?")]})["messages"]
    assert messages[1].tool_calls[0]["name"] == "search_documents"
    assert "mlflow.pyfunc.load_model [" in messages[-1].content
