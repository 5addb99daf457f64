"""Bad input never kills the server: each bad request gets the right 4xx/5xx and /health still answers."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import httpx
import openai
import pytest
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from ragworks.errors import ConfigError, ModelError, RetrievalError
from ragworks.serving import ServingLimits, build_app, serve_in_thread

WORDS = ["The ", "index ", "holds ", "JSON ", "files ", "[1]."]
SOURCES = {"sources": [{"id": "c1", "source": "index.md", "score": 1.0, "snippet": "JSON files"}]}
ASK = {"input": [{"role": "user", "content": "What does the index hold?"}]}


class ScriptedAgent(ResponsesAgent):
    """Streams WORDS with a delay between them; optionally fails after some words."""

    def __init__(self, *, delay: float = 0.0, fail: Exception | None = None, fail_after: int = 0) -> None:
        self.delay, self.fail, self.fail_after = delay, fail, fail_after
        self.produced = 0
        self.lock = threading.Lock()

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        """Collect the stream."""
        items = [e.item for e in self.predict_stream(request) if e.type == "response.output_item.done"]
        return ResponsesAgentResponse(output=items, custom_outputs=SOURCES)

    def predict_stream(
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        """Yield one delta per word, then the finished item with the sources."""
        for n, word in enumerate(WORDS):
            if self.fail is not None and n == self.fail_after:
                raise self.fail
            time.sleep(self.delay)
            with self.lock:
                self.produced += 1
            yield ResponsesAgentStreamEvent(**self.create_text_delta(word, "msg_1"))
        item = self.create_text_output_item("".join(WORDS), "msg_1")
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=item, custom_outputs=SOURCES)


@pytest.fixture()
def serve() -> Iterator[Any]:
    """Start servers for a test: serve(agent, **limits) -> base URL; all stopped at the end."""
    stack: list[Any] = []

    def start(agent: ResponsesAgent, **limits: Any) -> str:
        context = serve_in_thread(build_app(agent, limits=ServingLimits(**limits), api_token=""))
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def _events(text: str) -> list[Any]:
    return [
        json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


def _assert_alive(url: str) -> None:
    assert httpx.get(url + "/health").json() == {"status": "healthy"}
    response = httpx.post(url + "/v1/responses", json=ASK, timeout=30)
    assert response.status_code == 200, response.text


def _assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] and len(error["message"]) > 20, error
    return error


BAD_REQUESTS = [
    ("POST", "/v1/responses", b"{not json", 400, "invalid_json"),
    ("POST", "/v1/responses", b"", 400, "invalid_request"),
    ("POST", "/v1/responses", b"[1, 2]", 400, "invalid_request"),
    ("POST", "/v1/responses", b'{"input": 5}', 400, "invalid_request"),
    ("POST", "/v1/responses", b'{"input": [{"role": "robot", "content": "hi"}]}', 400, "invalid_request"),
    ("POST", "/v1/responses", b'{"input": [{"role": "user", "content": 7}]}', 400, "invalid_request"),
    ("POST", "/v1/responses", b'{"input": "hi", "stream": "yes"}', 400, "invalid_request"),
    ("POST", "/v1/responses", b'{"messages": []}', 400, "invalid_request"),
    ("POST", "/v1/responses", b'{"input": []}', 400, "empty_input"),
    ("POST", "/responses", b'{"input": [{"role": "user", "content": ""}]}', 400, "empty_input"),
    ("POST", "/invocations", b'{"input": "' + b"x" * 5000 + b'"}', 400, "input_too_long"),
    ("POST", "/v1/chat/completions", b"{oops", 400, "invalid_json"),
    ("POST", "/v1/chat/completions", b'{"messages": []}', 400, "invalid_request"),
    ("POST", "/v1/chat/completions", b'{"messages": "hello"}', 400, "invalid_request"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": ""}]}', 400, "empty_input"),
    ("POST", "/v1/responses", b"x" * (10 * 1024 * 1024), 413, "body_too_large"),
    ("GET", "/v1/nothing-here", b"", 404, "not_found"),
    ("GET", "/v1/responses", b"", 405, "method_not_allowed"),
]


def test_bad_requests_get_clear_errors(serve: Any) -> None:
    url = serve(ScriptedAgent(), max_input_chars=2000)
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body, status, code in BAD_REQUESTS:
            response = client.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            _assert_error(response, status, code)
    _assert_alive(url)


def test_agent_errors_keep_their_status_and_message(serve: Any) -> None:
    cases = [
        (ConfigError("Index ./nowhere does not exist; run `ragworks ingest`."), 400, "config_error"),
        (RetrievalError("Vector Search answered 503; retry later.", backend="vs"), 502, "retrieval_error"),
    ]
    for exc, status, code in cases:
        url = serve(ScriptedAgent(fail=exc))
        for path, body in [
            ("/v1/responses", ASK),
            ("/invocations", ASK),
            ("/v1/chat/completions", {"messages": ASK["input"]}),
        ]:
            error = _assert_error(httpx.post(url + path, json=body, timeout=30), status, code)
            assert error["message"] == str(exc)
        assert httpx.get(url + "/health").status_code == 200


def test_failure_mid_stream_ends_with_an_error_event(serve: Any) -> None:
    url = serve(ScriptedAgent(fail=RetrievalError("The index went away; re-run ingest."), fail_after=2))
    text = httpx.post(url + "/v1/responses", json={**ASK, "stream": True}, timeout=30).text
    events = _events(text)
    assert [e["type"] for e in events[:3]] == ["response.created", *["response.output_text.delta"] * 2]
    assert events[-2]["type"] == "error" and events[-2]["code"] == "retrieval_error"
    assert events[-2]["error"]["message"] == "The index went away; re-run ingest."
    assert events[-1] == "[DONE]"
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIError, match="index went away"):
        list(client.responses.create(model="m", input="What does the index hold?", stream=True))
    with pytest.raises(openai.APIError, match="index went away"):
        list(client.chat.completions.create(model="m", messages=ASK["input"], stream=True))  # type: ignore[arg-type]
    _assert_alive(serve(ScriptedAgent()))


def test_timeout(serve: Any) -> None:
    url = serve(ScriptedAgent(delay=0.3), timeout_s=0.5)
    _assert_error(httpx.post(url + "/v1/responses", json=ASK, timeout=30), 504, "timeout")
    _assert_error(
        httpx.post(url + "/v1/chat/completions", json={"messages": ASK["input"]}, timeout=30), 504, "timeout"
    )
    events = _events(httpx.post(url + "/v1/responses", json={**ASK, "stream": True}, timeout=30).text)
    assert events[-2]["type"] == "error" and events[-2]["code"] == "timeout"
    assert httpx.get(url + "/health").status_code == 200


def test_client_disconnect_mid_stream(serve: Any) -> None:
    agent = ScriptedAgent(delay=0.2)
    url = serve(agent, max_concurrency=2)
    for path, body in [
        ("/v1/responses", {**ASK, "stream": True}),
        ("/v1/chat/completions", {"messages": ASK["input"], "stream": True}),
    ]:
        with httpx.stream("POST", url + path, json=body, timeout=30) as response:
            for line in response.iter_lines():
                if "delta" in line:
                    break  # hang up after the first token
    time.sleep(1.0)
    assert agent.produced < 2 * len(WORDS)  # the abandoned streams stopped early
    for _ in range(2):  # both concurrency slots were given back
        agent.delay = 0.0
        _assert_alive(url)


def test_overload_gets_503_with_retry_after(serve: Any) -> None:
    url = serve(ScriptedAgent(delay=0.05), max_concurrency=8)

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*[client.post("/v1/responses", json=ASK) for _ in range(200)])

    responses = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) >= 8
    for response in responses:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"]["code"] == "server_overloaded"
    _assert_alive(url)


MODEL_FAILURES = [
    (ModelError("The model answered 500; retry later."), 502, "model_error", None),
    (ModelError("The model is overloaded.", status=503, retry_after=2.5), 503, "model_overloaded", "3"),
    (ModelError("The model did not answer within 30 s.", status=504), 504, "model_timeout", None),
    (TimeoutError(), 504, "timeout", None),
]


@pytest.mark.parametrize(("exc", "status", "code", "retry_after"), MODEL_FAILURES, ids=lambda v: str(v)[:20])
def test_model_failures_map_to_502_503_504(
    serve: Any, exc: Exception, status: int, code: str, retry_after: str | None
) -> None:
    url = serve(ScriptedAgent(fail=exc))
    for path, body in [("/v1/responses", ASK), ("/v1/chat/completions", {"messages": ASK["input"]})]:
        response = httpx.post(url + path, json=body, timeout=30)
        error = _assert_error(response, status, code)
        assert response.headers.get("Retry-After") == retry_after
        if isinstance(exc, ModelError):
            assert error["message"] == str(exc)
    events = _events(httpx.post(url + "/v1/responses", json={**ASK, "stream": True}, timeout=30).text)
    assert events[-2]["type"] == "error" and events[-2]["code"] == code and events[-1] == "[DONE]"
    assert not any(e != "[DONE]" and e["type"] == "response.completed" for e in events)
    _assert_alive(serve(ScriptedAgent()))


def test_an_unexpected_agent_error_is_a_500_logged_once(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = serve(ScriptedAgent(fail=KeyError("surprise")))
    caplog.set_level(logging.INFO)
    uvicorn_log = logging.getLogger("uvicorn")  # it does not propagate: listen to it directly
    uvicorn_log.addHandler(caplog.handler)
    try:
        _assert_error(httpx.post(url + "/v1/responses", json=ASK, timeout=30), 500, "internal_error")
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].name.startswith("ragworks"), caplog.records
