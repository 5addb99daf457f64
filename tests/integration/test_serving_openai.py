"""The real `openai` client against `ragworks serve`'s app on 127.0.0.1, with the offline model."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import httpx
import openai
import pytest
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent
from openai import OpenAI

from ragworks.agents import build_agent
from ragworks.serving import build_app, serve_in_thread

TOKEN = "test-token-123"
QUESTION = "Which files does the index folder hold?"


@pytest.fixture(scope="module")
def base_url(docs_index: str) -> Iterator[str]:
    """One server for the module, with auth on."""
    agent = build_agent({"retriever": {"index": docs_index, "k": 3}})
    with serve_in_thread(build_app(agent, api_token=TOKEN)) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> OpenAI:
    """An openai client pointed at the server's /v1."""
    return OpenAI(base_url=f"{base_url}/v1", api_key=TOKEN, max_retries=0, timeout=30)


def _sources(custom: Any) -> list[dict[str, Any]]:
    assert isinstance(custom, dict), custom
    sources = custom["sources"]
    assert sources and {"id", "source", "score", "snippet"} <= set(sources[0])
    return sources


def test_responses_create(client: OpenAI) -> None:
    response = client.responses.create(model="ragworks", input=QUESTION)
    assert "JSON" in response.output_text or "numpy" in response.output_text
    sources = _sources(response.model_extra["custom_outputs"])
    assert any(s["source"].endswith("index.md") for s in sources)


def test_responses_stream(client: OpenAI) -> None:
    events = list(client.responses.create(model="ragworks", input=QUESTION, stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    done = [e for e in events if e.type == "response.output_item.done"][-1]
    assert "".join(deltas) == done.item.content[0].text
    _sources(events[-1].model_extra["custom_outputs"])  # the final event carries the sources
    assert events[-1].response.output[-1].content[0].text == "".join(deltas)


def test_chat_completions(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="ragworks", messages=[{"role": "user", "content": QUESTION}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert "[1]" in (completion.choices[0].message.content or "")
    _sources(completion.model_extra["custom_outputs"])


def test_chat_completions_stream(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="ragworks", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    plain = client.chat.completions.create(model="ragworks", messages=[{"role": "user", "content": QUESTION}])
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    _sources(chunks[-1].model_extra["custom_outputs"])


def test_multi_turn(client: OpenAI) -> None:
    first = client.responses.create(model="ragworks", input=QUESTION)
    turns = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "How are traces recorded for each request?"},
    ]
    second = client.responses.create(model="ragworks", input=turns)  # type: ignore[arg-type]
    assert second.output_text and second.output_text != first.output_text
    assert any(s["source"].endswith("agents.md") for s in _sources(second.model_extra["custom_outputs"]))
    chat = client.chat.completions.create(model="ragworks", messages=turns)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == second.output_text


def _drop_authorization(request: Any) -> None:
    """The openai client insists on a key; this hook sends the request without one."""
    del request.headers["Authorization"]


@pytest.mark.parametrize("missing", [False, True], ids=["wrong", "missing"])
def test_wrong_or_missing_token(base_url: str, missing: bool) -> None:
    hooks = {"request": [_drop_authorization]} if missing else {}
    bad = OpenAI(
        base_url=f"{base_url}/v1",
        api_key="wrong-token",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(event_hooks=hooks),
    )
    with pytest.raises(openai.AuthenticationError) as info:
        bad.responses.create(model="ragworks", input=QUESTION)
    assert "RAGWORKS_API_TOKEN" in info.value.message
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="ragworks", messages=[{"role": "user", "content": QUESTION}])


def test_auth_covers_every_route_but_health_and_page(base_url: str) -> None:
    for method, path in [
        ("POST", "/invocations"),
        ("POST", "/responses"),
        ("GET", "/agent/info"),
        ("GET", "/v1/models"),
        ("GET", "/docs"),
    ]:
        response = httpx.request(method, base_url + path, json={"input": []})
        assert response.status_code == 401, path
        assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(base_url + "/health").json() == {"status": "healthy"}
    assert "<html" in httpx.get(base_url + "/").text


def test_agent_server_routes_answer_the_same(base_url: str, client: OpenAI) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"input": [{"role": "user", "content": QUESTION}]}
    expected = client.responses.create(model="ragworks", input=QUESTION).output_text
    for path in ("/invocations", "/responses", "/v1/responses"):
        data = httpx.post(base_url + path, json=body, headers=headers, timeout=30).json()
        assert data["output"][0]["content"][0]["text"] == expected, path
        _sources(data["custom_outputs"])
    models = httpx.get(base_url + "/v1/models", headers=headers).json()
    assert models["data"][0]["id"] == "ragworks-agent"


USAGE = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
DETAILS = {"input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


class UsageAgent(ResponsesAgent):
    """Reports token counts the way ragworks' agent does: on the response, and on the final item's event."""

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        """One answer with usage."""
        item = self.create_text_output_item("Two words.", "msg_1")
        return ResponsesAgentResponse(output=[item], usage={**USAGE, **DETAILS})

    def predict_stream(
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        """Two deltas, then the item with usage."""
        yield ResponsesAgentStreamEvent(**self.create_text_delta("Two ", "msg_1"))
        yield ResponsesAgentStreamEvent(**self.create_text_delta("words.", "msg_1"))
        item = self.create_text_output_item("Two words.", "msg_1")
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=item, usage=USAGE)


@pytest.fixture(scope="module")
def usage_client() -> Iterator[OpenAI]:
    """An openai client against a server whose agent reports usage."""
    with serve_in_thread(build_app(UsageAgent(), api_token="")) as url:
        yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_usage_in_responses_answers(usage_client: OpenAI) -> None:
    response = usage_client.responses.create(model="m", input=QUESTION)
    assert response.usage is not None and response.usage.model_dump(include=set(USAGE)) == USAGE
    events = list(usage_client.responses.create(model="m", input=QUESTION, stream=True))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.model_dump(include=set(USAGE)) == USAGE


def test_usage_in_chat_completions(usage_client: OpenAI) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    completion = usage_client.chat.completions.create(model="m", messages=messages)
    assert completion.usage is not None and completion.usage.model_dump(include=set(CHAT_USAGE)) == CHAT_USAGE
    plain = list(usage_client.chat.completions.create(model="m", messages=messages, stream=True))
    assert all(chunk.usage is None for chunk in plain) and plain[-1].choices
    chunks = list(
        usage_client.chat.completions.create(
            model="m", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump(include=set(CHAT_USAGE)) == CHAT_USAGE
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "Two words."


def test_usage_of_the_ragworks_agent_reaches_the_client(client: OpenAI, docs_index: str) -> None:
    agent = build_agent({"retriever": {"index": docs_index, "k": 3}})
    if agent.predict({"input": [{"role": "user", "content": QUESTION}]}).usage is None:
        pytest.skip("the agent does not report token usage yet")
    response = client.responses.create(model="ragworks", input=QUESTION)
    assert response.usage is not None and response.usage.output_tokens > 0
    messages: Any = [{"role": "user", "content": QUESTION}]
    chunks = list(
        client.chat.completions.create(
            model="ragworks", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
