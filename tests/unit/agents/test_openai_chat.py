"""`openai:` and `databricks:` chat models against the OpenAI-compatible stub on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from ragworks.agents import build_agent
from ragworks.agents.offline import OfflineChatModel
from ragworks.errors import ConfigError, ModelError
from ragworks.models import get_chat_model
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

pytestmark = pytest.mark.usefixtures("tracing_off")


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
        yield server


@tool
def get_weather(city: str) -> str:
    """Get the weather of a city."""
    return "sunny"


def test_factory_names() -> None:
    assert isinstance(get_chat_model("offline"), OfflineChatModel)
    with pytest.raises(ConfigError, match="openai:<model>"):
        get_chat_model("anthropic:claude")


def test_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        get_chat_model("openai:gpt-4o-mini").invoke("hi")


def test_real_openai_is_blocked_by_the_network_guard(
    _no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-a-key")
    with pytest.raises(RuntimeError, match=r"Tests may not resolve 'api\.openai\.com'"):
        get_chat_model("openai:gpt-4o-mini").invoke("hi")
    assert any("api.openai.com" in attempt for attempt in _no_network)
    _no_network.clear()  # reaching out was the point of this test; do not fail it


def test_invoke_sends_messages_and_reads_usage(stub: OpenAIStub) -> None:
    stub.enqueue("Hello there.")
    model = get_chat_model("openai:stub-model", temperature=0.2, max_tokens=50)
    reply = model.invoke([HumanMessage("Say hello")])
    assert reply.content == "Hello there."
    assert reply.usage_metadata == {"input_tokens": 2, "output_tokens": 2, "total_tokens": 4}
    body = stub.requests[0].body
    assert body["model"] == "stub-model" and body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert stub.requests[0].headers["authorization"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in repr(model)


def test_stream_yields_tokens_and_usage(stub: OpenAIStub) -> None:
    stub.enqueue("One two three four.")
    chunks = list(get_chat_model("openai:stub-model").stream([HumanMessage("count")]))
    assert [c.content for c in chunks if c.content] == ["One ", "two ", "three ", "four."]
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.usage_metadata["output_tokens"] == 4
    assert stub.requests[0].body["stream_options"] == {"include_usage": True}


def test_tool_calls_plain_and_streamed(stub: OpenAIStub) -> None:
    call = StubReply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    stub.enqueue(call, call)
    model = get_chat_model("openai:stub-model").bind_tools([get_weather])
    reply = model.invoke("weather in Oslo?")
    assert reply.tool_calls[0]["name"] == "get_weather" and reply.tool_calls[0]["args"] == {"city": "Oslo"}
    total = None
    for chunk in model.stream("weather in Oslo?"):
        total = chunk if total is None else total + chunk
    assert total.tool_calls[0]["args"] == {"city": "Oslo"}
    assert stub.requests[0].body["tools"][0]["function"]["name"] == "get_weather"


def test_retries_rate_limits_then_succeeds(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(status=429), StubReply(status=503), "finally")
    assert get_chat_model("openai:stub-model").invoke("hi").content == "finally"
    assert len(stub.requests) == 3


def test_errors_say_what_to_check(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(status=401, error="bad key"), StubReply(status=404, error="no model"))
    model = get_chat_model("openai:stub-model")
    with pytest.raises(ModelError, match="OPENAI_API_KEY") as info:
        model.invoke("hi")
    assert "sk-test-secret" not in str(info.value)
    with pytest.raises(ModelError, match="not found"):
        model.invoke("hi")


def test_databricks_endpoint_through_serving_route(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIStub(["from databricks"]) as server:
        host = server.base_url.removesuffix("/v1")
        for key in ("DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("DATABRICKS_HOST", host)
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-test")
        monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/.databrickscfg")
        reply = get_chat_model("databricks:my-endpoint").invoke("hi")
    assert reply.content == "from databricks"
    assert server.requests[0].body["model"] == "my-endpoint"
    assert server.requests[0].headers["authorization"] == "Bearer dapi-test"


def test_rag_agent_streams_from_an_openai_server(stub: OpenAIStub, docs_index: str) -> None:
    stub.enqueue("The index is a folder [1].")
    config: dict[str, Any] = {"llm": "openai:stub-model", "retriever": {"type": "local", "index": docs_index}}
    events = list(build_agent(config).predict_stream({"input": [{"role": "user", "content": "Index?"}]}))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "The index is a folder [1]."
    prompt = stub.requests[0].body["messages"][-1]["content"]
    assert '<source id="1"' in prompt and prompt.endswith("Question: Index?")
