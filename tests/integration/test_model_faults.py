"""A chat model that fails, end to end: the OpenAI stub behind an `openai:` agent, served on 127.0.0.1,
driven by the real `openai` client. A broken model is an error to the client, never an answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from ragworks.agents import build_agent
from ragworks.agents.deadline import request_deadline
from ragworks.errors import ModelError
from ragworks.serving import build_app, serve_in_thread
from ragworks.serving.limits import ServingLimits
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

pytestmark = pytest.mark.usefixtures("tracing_off")

QUESTION = [{"role": "user", "content": "What does the index folder hold?"}]
ANSWER = "The index folder holds chunks and vectors [1]."
REQUEST_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@contextmanager
def _served(stub: OpenAIStub, index: str, limits: ServingLimits) -> Iterator[str]:
    """A rag agent over `openai:stub-model`, served on 127.0.0.1; yields the base URL."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_BASE_URL", stub.base_url)
        env.setenv("OPENAI_API_KEY", "sk-test")
        config: dict[str, Any] = {
            "llm": "openai:stub-model",
            "llm_options": {"timeout_s": 30, "max_retries": 2},
            "retriever": {"type": "local", "index": index, "k": 2},
        }
        with serve_in_thread(build_app(build_agent(config), limits=limits)) as url:
            yield url


@pytest.fixture(scope="module")
def base_url(stub: OpenAIStub, docs_index: str) -> Iterator[str]:
    """One server for the module, with a short request timeout."""
    with _served(stub, docs_index, ServingLimits(timeout_s=REQUEST_TIMEOUT_S)) as url:
        yield url


@pytest.fixture()
def client(base_url: str, stub: OpenAIStub) -> OpenAI:
    """An openai client for the server; the stub starts each test with an empty script."""
    stub.reset()
    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=30)


STREAM_FAULTS = ["drop", "malformed_chunk", "empty_choices", "no_finish"]


@pytest.mark.parametrize("fault", STREAM_FAULTS)
def test_a_broken_model_stream_ends_the_responses_stream_with_an_error(
    client: OpenAI, stub: OpenAIStub, fault: str
) -> None:
    stub.enqueue(StubReply(content=ANSWER, fault=fault))  # type: ignore[arg-type]
    events, failure = _drain(client.responses.create(model="ragworks", input=QUESTION, stream=True))
    types = [e.type for e in events]
    assert "response.completed" not in types
    errors = [e for e in events if e.type in ("error", "response.failed")]
    message = str(failure) if failure is not None else repr(errors[-1])
    assert (failure is not None or errors) and "openai:stub-model" in message, (types, failure)


@pytest.mark.parametrize("fault", ["drop", "no_finish"])
def test_a_broken_model_stream_ends_chat_completions_with_an_error(
    client: OpenAI, stub: OpenAIStub, fault: str
) -> None:
    stub.enqueue(StubReply(content=ANSWER, fault=fault))  # type: ignore[arg-type]
    chunks, failure = _drain(client.chat.completions.create(model="ragworks", messages=QUESTION, stream=True))
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert not finished, "a broken stream was finished as an answer"
    assert failure is not None and "openai:stub-model" in str(failure), (chunks[-1:], failure)


@pytest.mark.parametrize("fault", ["no_choices", "no_message", "bad_json", "not_json"])
def test_a_malformed_model_reply_is_a_502_naming_the_model(
    client: OpenAI, stub: OpenAIStub, fault: str
) -> None:
    stub.enqueue(StubReply(content=ANSWER, fault=fault))  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="ragworks", input=QUESTION)
    assert info.value.status_code == 502 and "openai:stub-model" in info.value.message


def test_a_wrong_key_is_a_502_that_says_so(client: OpenAI, stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(status=401, error="invalid api key"))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="ragworks", messages=QUESTION)
    assert info.value.status_code == 502 and "OPENAI_API_KEY" in info.value.message


def test_an_overloaded_model_is_a_503_with_its_retry_after(base_url: str, stub: OpenAIStub) -> None:
    stub.reset()
    stub.enqueue(StubReply(status=503, error="overloaded", retry_after=7, retry_after_ms=None))
    reply = httpx.post(f"{base_url}/v1/responses", json={"input": QUESTION}, timeout=30)
    assert reply.status_code == 503, reply.text
    assert reply.headers.get("retry-after") == "7"
    assert "openai:stub-model" in reply.json()["error"]["message"] and len(stub.requests) == 1


def test_a_hung_model_is_a_504_and_the_next_request_is_answered(client: OpenAI, stub: OpenAIStub) -> None:
    stub.enqueue(StubReply(content="too late", hang_s=6.0), ANSWER)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="ragworks", input=QUESTION)
    assert info.value.status_code == 504 and time.monotonic() - started < REQUEST_TIMEOUT_S + 1.0
    answered = client.responses.create(model="ragworks", input=QUESTION)
    assert answered.output_text == ANSWER and len(stub.requests) == 2  # no retry past the deadline


def test_a_hung_model_call_returns_at_the_request_deadline(stub: OpenAIStub, docs_index: str) -> None:
    # The worker thread is given back when the request's time is up, not when the model recovers.
    stub.reset()
    stub.enqueue(StubReply(content="too late", hang_s=6.0))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_BASE_URL", stub.base_url)
        env.setenv("OPENAI_API_KEY", "sk-test")
        agent = build_agent({"llm": "openai:stub-model", "retriever": {"type": "local", "index": docs_index}})
        started = time.monotonic()
        with request_deadline(1.0), pytest.raises(ModelError) as info:
            agent.predict({"input": QUESTION})
    assert time.monotonic() - started < 1.8 and info.value.status == 504
    assert "openai:stub-model" in str(info.value) and len(stub.requests) == 1


def _drain(stream: Any) -> tuple[list[Any], Exception | None]:
    """Every event of a stream, and the exception that ended it, if any."""
    events: list[Any] = []
    try:
        for event in stream:
            events.append(event)
    except (openai.APIError, httpx.HTTPError) as exc:
        return events, exc
    return events, None
