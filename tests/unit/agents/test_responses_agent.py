"""RagResponsesAgent and RagChatModel over the offline model: answers, sources, streaming."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.types.llm import ChatMessage, ChatParams
from mlflow.types.responses import ResponsesAgentResponse

from ragworks.agents import RagChatModel, RagResponsesAgent, build_agent
from ragworks.agents.builder import build_chat_agent
from ragworks.agents.graphs import build_rag_graph
from ragworks.agents.prompts import NOT_FOUND
from ragworks.agents.responses_agent import reduce_stream
from ragworks.config import AgentConfig
from ragworks.retrieval.registry import get_retriever
from ragworks.testing.fakes import ScriptedChatModel

pytestmark = pytest.mark.usefixtures("tracing_off")


def _config(index: str, **kwargs: Any) -> AgentConfig:
    return AgentConfig(llm="offline", retriever={"type": "local", "index": index, "k": 2}, **kwargs)


def _request(*turns: str) -> dict[str, Any]:
    roles = ["user", "assistant"]
    return {"input": [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]}


def _text(response: ResponsesAgentResponse) -> str:
    return response.output[-1].content[0]["text"]


@pytest.fixture(scope="module")
def agent(docs_index: str) -> RagResponsesAgent:
    return build_agent(_config(docs_index))


def test_answers_with_citations_and_sources(agent: RagResponsesAgent) -> None:
    response = agent.predict(_request("How are logged agents loaded back?"))
    assert "mlflow.pyfunc.load_model [1]" in _text(response)
    sources = response.custom_outputs["sources"]
    assert {"n", "id", "source", "score", "snippet", "cited"} <= sources[0].keys()
    assert sources[0]["source"].endswith("agents.md") and sources[0]["cited"]


def test_says_not_found_for_unrelated_questions(agent: RagResponsesAgent) -> None:
    assert _text(agent.predict(_request("What is the boiling point of mercury?"))) == NOT_FOUND


def test_stream_deltas_add_up_to_the_final_text(agent: RagResponsesAgent) -> None:
    events = list(agent.predict_stream(_request("How does ragworks store the index?")))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    done = [e for e in events if e.type == "response.output_item.done"]
    assert len(deltas) > 1
    assert "".join(deltas) == done[-1].item["content"][0]["text"]
    assert {e.item_id for e in events if e.type == "response.output_text.delta"} == {done[-1].item["id"]}
    assert done[-1].custom_outputs["sources"]


def test_predict_is_the_reduction_of_predict_stream(agent: RagResponsesAgent) -> None:
    request = _request("How does ragworks store the index?")
    predicted = agent.predict(request)
    reduced = reduce_stream(agent.predict_stream(request))
    assert _text(predicted) == _text(reduced)
    assert predicted.custom_outputs == reduced.custom_outputs


def test_multi_turn_condenses_the_follow_up(agent: RagResponsesAgent) -> None:
    response = agent.predict(
        _request("How does ragworks store the index?", "In a folder [1].", "Does it use pickle?")
    )
    assert "never pickle [1]" in _text(response)


def test_tool_calling_agent_reports_tool_items(docs_index: str) -> None:
    agent = build_agent(_config(docs_index, agent="tool-calling"))
    output = agent.predict(_request("How are logged agents loaded back?")).output
    assert [item.type for item in output] == ["function_call", "function_call_output", "message"]
    assert output[0].name == "search_documents" and output[1].call_id == output[0].call_id
    assert '<source id="1"' in output[1].output
    assert "load_model [" in output[2].content[0]["text"]


def test_build_agent_accepts_a_yaml_path(docs_index: str, tmp_path: Any) -> None:
    path = tmp_path / "agent.yaml"
    _config(docs_index).to_yaml(path)
    agent = build_agent(str(path))
    assert agent.config is not None and agent.config.retriever.index == docs_index


def test_chat_model_predict_and_stream(docs_index: str) -> None:
    model = build_chat_agent(_config(docs_index))
    assert isinstance(model, RagChatModel)
    messages = [ChatMessage(role="user", content="How does ragworks store the index?")]
    response = model.predict(None, messages, ChatParams())
    text = response.choices[0].message.content
    assert "[1]" in text and response.custom_outputs["sources"]
    chunks = list(model.predict_stream(None, messages, ChatParams()))
    assert len(chunks) > 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].custom_outputs["sources"]


class _CountingModel(ScriptedChatModel):
    """Records whether LangGraph asked for a token stream or a single reply."""

    streamed: int = 0

    def _stream(self, *args: Any, **kwargs: Any) -> Any:
        self.streamed += 1
        return super()._stream(*args, **kwargs)


def test_predict_invokes_the_model_once_and_predict_stream_streams_tokens(docs_index: str) -> None:
    model = _CountingModel(responses=["It is a folder [1]."], repeat_last=True)
    agent = RagResponsesAgent(build_rag_graph(get_retriever(_config(docs_index)), model, condense="none"))
    predicted = agent.predict(_request("How does ragworks store the index?"))
    assert model.streamed == 0 and _text(predicted) == "It is a folder [1]."
    deltas = [
        e.delta
        for e in agent.predict_stream(_request("How does ragworks store the index?"))
        if e.type == "response.output_text.delta"
    ]
    assert model.streamed == 1 and len(deltas) > 1 and "".join(deltas) == "It is a folder [1]."
