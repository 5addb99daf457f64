"""Streaming and usage with the real `openai` client against the OpenAI stub, as a served model would run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ragworks.agents import RagResponsesAgent, build_agent
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

pytestmark = pytest.mark.usefixtures("tracing_off")

QUESTION = {"input": [{"role": "user", "content": "Where is the index stored?"}]}
CALL = StubReply(
    tool_calls=[{"name": "search_documents", "arguments": {"query": "index folder"}, "id": "call_7"}],
    usage={"prompt_tokens": 90, "completion_tokens": 6, "total_tokens": 96},
)
ANSWER = StubReply(
    content="The index is a folder of files [1].",
    usage={"prompt_tokens": 400, "completion_tokens": 9, "total_tokens": 409},
)


@pytest.fixture()
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture()
def agent(stub: OpenAIStub, docs_index: str, monkeypatch: pytest.MonkeyPatch) -> RagResponsesAgent:
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config: dict[str, Any] = {
        "llm": "openai:stub-model",
        "agent": "tool-calling",
        "retriever": {"type": "local", "index": docs_index, "k": 2},
    }
    return build_agent(config)


def test_streamed_tool_calls_and_usage_match_predict(stub: OpenAIStub, agent: RagResponsesAgent) -> None:
    stub.enqueue(CALL, ANSWER)
    events = [e.model_dump(exclude_none=True) for e in agent.predict_stream(QUESTION)]
    assert [r.body.get("stream") for r in stub.requests] == [True, True]  # the model was streamed
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [d["item"]["type"] for d in done] == ["function_call", "function_call_output", "message"]
    assert done[0]["item"]["call_id"] == "call_7"
    assert json.loads(done[0]["item"]["arguments"]) == {"query": "index folder"}
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == done[-1]["item"]["content"][0]["text"] == ANSWER.content
    usage = {"input_tokens": 490, "output_tokens": 15, "total_tokens": 505}
    assert {k: done[-1]["usage"][k] for k in usage} == usage

    stub.enqueue(CALL, ANSWER)
    predicted = agent.predict(QUESTION)
    assert [r.body.get("stream") for r in stub.requests[2:]] == [None, None]  # invoked once each
    assert predicted.usage is not None and predicted.usage.model_dump() == done[-1]["usage"]
    assert predicted.output[-1].content[0]["text"] == ANSWER.content
