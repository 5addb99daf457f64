"""`openai:` and `databricks:` chat models against the OpenAI-compatible stub on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from ragworks.agents import build_agent
from ragworks.agents.deadline import request_deadline
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


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("drop", "it broke"),
        ("malformed_chunk", "not JSON"),
        ("empty_choices", "no choices that is not the usage chunk"),
        ("no_finish", "ended before its finish reason"),
    ],
)
def test_a_broken_stream_is_an_error_not_a_short_answer(stub: OpenAIStub, fault: str, says: str) -> None:
    stub.enqueue(StubReply(content="one two three four five", fault=fault))  # type: ignore[arg-type]
    chunks: list[str] = []
    with pytest.raises(ModelError, match=says) as info:
        for chunk in get_chat_model("openai:stub-model").stream("count"):
            chunks.append(str(chunk.content))
    assert "openai:stub-model" in str(info.value) and info.value.status == 502
    assert "".join(chunks).startswith("one two")  # it had streamed text before it broke
    assert len(stub.requests) == 1  # a stream that has begun is never retried


@pytest.mark.parametrize("fault", ["drop", "malformed_chunk", "no_finish"])
def test_invoke_over_a_broken_stream_raises(stub: OpenAIStub, fault: str) -> None:
    # invoke() streams under LangGraph's messages mode; without a callback it calls _stream via the handler
    stub.enqueue(StubReply(content="one two three four five", fault=fault))  # type: ignore[arg-type]
    model = get_chat_model("openai:stub-model")
    with pytest.raises(ModelError, match="openai:stub-model"):
        model.invoke("count", config={"callbacks": []}, stream=True)


def test_the_usage_chunk_is_not_a_break(stub: OpenAIStub) -> None:
    stub.enqueue("all good here")
    chunks = list(get_chat_model("openai:stub-model").stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "all good here"
    assert any(c.usage_metadata for c in chunks)  # the choices-less usage chunk was accepted


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("no_choices", "returned no choices"),
        ("no_message", "without a message"),
        ("bad_json", "not valid JSON"),
        ("not_json", "not a chat completion"),
        ("drop", "Cannot reach"),
    ],
)
def test_a_malformed_plain_reply_is_a_502_naming_the_model(stub: OpenAIStub, fault: str, says: str) -> None:
    stub.enqueue(*[StubReply(content="hi", fault=fault)] * 3)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=says) as info:
        get_chat_model("openai:stub-model", max_retries=0).invoke("hi")
    assert "openai:stub-model" in str(info.value) and info.value.status == 502


@pytest.mark.parametrize(
    ("status", "says", "http"),
    [
        (401, "OPENAI_API_KEY", 502),
        (403, "OPENAI_API_KEY", 502),
        (404, "not found", 502),
        (400, "HTTP 400", 502),
    ],
)
def test_client_errors_are_not_retried_and_map_to_502(
    stub: OpenAIStub, status: int, says: str, http: int
) -> None:
    stub.enqueue(StubReply(status=status, error="nope"), "unused")
    with pytest.raises(ModelError, match=says) as info:
        get_chat_model("openai:stub-model").invoke("hi")
    assert info.value.status == http and len(stub.requests) == 1


@pytest.mark.parametrize(("status", "http"), [(429, 503), (503, 503), (500, 502), (504, 504)])
def test_overload_after_retries_carries_status_and_retry_after(
    stub: OpenAIStub, status: int, http: int
) -> None:
    stub.enqueue(*[StubReply(status=status, retry_after=0.01, retry_after_ms=None)] * 3)
    with pytest.raises(ModelError) as info:
        get_chat_model("openai:stub-model", max_retries=2).invoke("hi")
    assert info.value.status == http and len(stub.requests) == 3
    if http == 503:
        assert info.value.retry_after == pytest.approx(0.01)


def test_a_long_retry_after_is_passed_on_not_waited_for(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(status=503, retry_after=120, retry_after_ms=None), "unused")
    started = time.monotonic()
    with pytest.raises(ModelError, match="overloaded") as info:
        get_chat_model("openai:stub-model").invoke("hi")
    assert time.monotonic() - started < 2 and len(stub.requests) == 1
    assert info.value.status == 503 and info.value.retry_after == 120


def test_a_hung_model_times_out_then_the_retry_is_answered(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(content="late", hang_s=2.0), "on time")
    started = time.monotonic()
    reply = get_chat_model("openai:stub-model", timeout_s=0.3, max_retries=1).invoke("hi")
    assert reply.content == "on time" and time.monotonic() - started < 1.5


def test_a_timeout_without_retries_is_a_504(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(content="late", hang_s=1.0))
    with pytest.raises(ModelError, match=r"did not answer within 0\.2 s") as info:
        get_chat_model("openai:stub-model", timeout_s=0.2, max_retries=0).invoke("hi")
    assert info.value.status == 504


def test_the_request_deadline_caps_timeout_and_retries(stub: OpenAIStub) -> None:
    stub.enqueue(*[StubReply(content="late", hang_s=1.5)] * 3)
    started = time.monotonic()
    with request_deadline(0.4), pytest.raises(ModelError) as info:
        get_chat_model("openai:stub-model", timeout_s=60, max_retries=2).invoke("hi")
    assert time.monotonic() - started < 1.0  # not 60 s, and no retry that the request cannot wait for
    assert info.value.status == 504 and len(stub.requests) == 1


def test_retries_stop_when_the_request_cannot_wait_for_them(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(status=429, retry_after=1.0, retry_after_ms=None), "unused")
    with request_deadline(0.8), pytest.raises(ModelError, match="rate limited") as info:
        get_chat_model("openai:stub-model").invoke("hi")
    assert info.value.status == 503 and info.value.retry_after == 1.0 and len(stub.requests) == 1


def test_a_cancelled_request_stops_the_stream(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(content="one two three four five six", stall_s=0.3))
    chunks: list[str] = []
    with request_deadline(30.0) as active, pytest.raises(ModelError, match="cancelled") as info:
        for chunk in get_chat_model("openai:stub-model").stream("count"):
            chunks.append(str(chunk.content))
            if chunk.content:
                active.cancel()
    assert info.value.status == 504 and chunks[-1] == "one "


def test_config_options_reach_the_model(stub: OpenAIStub, docs_index: str) -> None:
    stub.enqueue(StubReply(content="late", hang_s=1.0))
    config: dict[str, Any] = {
        "llm": "openai:stub-model",
        "llm_options": {"timeout_s": 0.2, "max_retries": 0},
        "retriever": {"type": "local", "index": docs_index},
    }
    with pytest.raises(ModelError, match=r"within 0\.2 s"):
        build_agent(config).predict({"input": [{"role": "user", "content": "Index?"}]})
    with pytest.raises(ConfigError, match=r"llm_options\.max_retries"):
        build_agent({**config, "llm_options": {"max_retries": -1}})


@pytest.mark.parametrize("fault", ["drop", "no_finish", "empty_choices"])
def test_agent_stream_raises_on_a_broken_model_stream(stub: OpenAIStub, docs_index: str, fault: str) -> None:
    stub.enqueue(StubReply(content="The index is a folder [1].", fault=fault))  # type: ignore[arg-type]
    config: dict[str, Any] = {"llm": "openai:stub-model", "retriever": {"type": "local", "index": docs_index}}
    events: list[Any] = []
    with pytest.raises(ModelError, match="stream from openai:stub-model"):
        for event in build_agent(config).predict_stream({"input": [{"role": "user", "content": "Index?"}]}):
            events.append(event)
    assert not any(e.type == "response.output_item.done" for e in events)


def test_a_stalled_stream_times_out_as_a_504(stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(content="one two three four", stall_s=1.5))
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"failed after 3 chunks.*within 0\.3 s") as info:
        list(get_chat_model("openai:stub-model", timeout_s=0.3).stream("count"))
    assert info.value.status == 504 and time.monotonic() - started < 1.2 and len(stub.requests) == 1


def test_retry_after_reads_milliseconds_seconds_and_dates() -> None:
    from email.utils import formatdate

    from ragworks.agents._openai_errors import retry_after

    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "7"}) == 7.0
    assert 25 < (retry_after({"retry-after": formatdate(time.time() + 30, usegmt=True)}) or 0) <= 30
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None
