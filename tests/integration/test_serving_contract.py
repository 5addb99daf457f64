"""Our app keeps MLflow AgentServer's HTTP contract, and reads each body once.

MLflow's AgentServer (its `@invoke`/`@stream` are process-wide, so it runs in a subprocess) and our app
serve the same small agent on 127.0.0.1; the same requests go to both and the answers are compared:
status, content type, JSON keys and types, the agent's output, SSE framing and event types, trace ids.
Deliberate differences: ours fills `id`, `model`, `status` and `created_at`, frames a stream with
`response.created` / `response.completed`, and answers errors in OpenAI's shape with mapped statuses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import pytest
from mlflow.types.responses import ResponsesAgentRequest

from ragworks.serving import _requests, build_app, serve_in_thread

AGENT_CODE = '''
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentResponse, ResponsesAgentStreamEvent


class EchoAgent(ResponsesAgent):
    """Answers 'echo: <last message>', streamed as two deltas and the finished item."""

    seen = []

    def _text(self, request):
        self.seen.append(request)
        return "echo: " + str(request.input[-1].model_dump().get("content"))

    def predict(self, request):
        item = self.create_text_output_item(self._text(request), "msg_1")
        return ResponsesAgentResponse(output=[item], custom_outputs={"sources": []})

    def predict_stream(self, request):
        text = self._text(request)
        yield ResponsesAgentStreamEvent(**self.create_text_delta(text[:5], "msg_1"))
        yield ResponsesAgentStreamEvent(**self.create_text_delta(text[5:], "msg_1"))
        item = self.create_text_output_item(text, "msg_1")
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=item)
'''
AGENT_SERVER = '''
import sys
import uvicorn
from mlflow.genai.agent_server import AgentServer, invoke, stream

exec(open(sys.argv[2]).read())
agent = EchoAgent()


@invoke()
def handle(request):
    return agent.predict(request)


@stream()
def handle_stream(request):
    yield from agent.predict_stream(request)


app = AgentServer(agent_type="ResponsesAgent").app
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''
ASK = {"input": [{"role": "user", "content": "What does the index hold?"}]}
TRACE = {"x-mlflow-return-trace-id": "true"}


def _echo_agent() -> Any:
    scope: dict[str, Any] = {}
    exec(AGENT_CODE, scope)  # the very code the AgentServer subprocess runs
    return scope["EchoAgent"]()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def theirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MLflow's AgentServer with the echo agent, in its own process, tracing to a temp store."""
    tmp = tmp_path_factory.mktemp("agent-server")
    (tmp / "agent.py").write_text(AGENT_CODE)
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    env.pop("MLFLOW_TRACE_SAMPLING_RATIO", None)
    proc = subprocess.Popen([sys.executable, "-c", AGENT_SERVER, str(port), str(tmp / "agent.py")], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "MLflow's AgentServer exited"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "MLflow's AgentServer did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our app with the same echo agent, tracing like AgentServer's process (sampling ratio unset)."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACE_SAMPLING_RATIO", raising=False)
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('ours')}/mlflow.db")
    mlflow.tracing.reset()
    try:
        with serve_in_thread(build_app(_echo_agent(), api_token="")) as url:
            yield url
    finally:
        mlflow.set_tracking_uri(original)
        mp.undo()
        mlflow.tracing.reset()


def _shape(value: Any) -> Any:
    """Keys and value types, recursively (lists by their first item)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _events(response: httpx.Response) -> list[Any]:
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/responses", "/invocations"])
def test_answers_have_agent_servers_shape(theirs: str, ours: str, path: str) -> None:
    mine, reference = (httpx.post(url + path, json=ASK, headers=TRACE, timeout=30) for url in (ours, theirs))
    assert mine.status_code == reference.status_code == 200
    assert mine.headers["content-type"] == reference.headers["content-type"] == "application/json"
    body, expected = mine.json(), reference.json()
    assert body["output"] == expected["output"] and body["custom_outputs"] == expected["custom_outputs"]
    shape, expected_shape = _shape(body), _shape(expected)
    assert {key: shape[key] for key in expected_shape} == expected_shape
    assert set(shape) - set(expected_shape) <= {"id", "model", "status", "created_at"}
    for trace_id in (body["metadata"]["trace_id"], expected["metadata"]["trace_id"]):
        assert trace_id.startswith("tr-")
    plain = httpx.post(ours + path, json=ASK, timeout=30).json()
    assert "metadata" not in plain and "metadata" not in httpx.post(theirs + path, json=ASK).json()


@pytest.mark.slow
@pytest.mark.parametrize("trace", [False, True], ids=["plain", "trace-id"])
def test_streams_have_agent_servers_framing(theirs: str, ours: str, trace: bool) -> None:
    headers = TRACE if trace else {}
    mine, reference = (
        httpx.post(url + "/responses", json={**ASK, "stream": True}, headers=headers, timeout=30)
        for url in (ours, theirs)
    )
    assert mine.status_code == reference.status_code == 200
    for response in (mine, reference):
        assert response.headers["content-type"].startswith("text/event-stream")
    events, expected = _events(mine), _events(reference)
    assert events[-1] == expected[-1] == "[DONE]"
    if trace:
        assert set(events[-2]) == set(expected[-2]) == {"trace_id"}
        events, expected = events[:-1], expected[:-1]
    agent_events = [e for e in events[:-1] if e["type"] not in ("response.created", "response.completed")]
    assert [_shape(e) for e in agent_events] == [_shape(e) for e in expected[:-1]]
    assert agent_events == expected[:-1]  # the agent's events pass through unchanged
    assert events[0]["type"] == "response.created" and events[-2]["type"] == "response.completed"


@pytest.mark.slow
def test_info_routes_answer_the_same(theirs: str, ours: str) -> None:
    assert httpx.get(ours + "/health").json() == httpx.get(theirs + "/health").json()
    info = httpx.get(ours + "/agent/info").json()
    assert set(info.pop("ragworks")) == {"agent", "model", "index", "conversations"}  # our one added key
    assert info == httpx.get(theirs + "/agent/info").json()  # AgentServer's own keys, unchanged
    for url in (ours, theirs):  # both refuse what is not JSON (ours in OpenAI's error shape)
        assert httpx.post(url + "/responses", content=b"{nope", timeout=30).status_code == 400


def test_each_body_is_parsed_once_and_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"parse": 0, "validate": 0}
    parse, validate = _requests.decode_json, _requests.validate

    def counted_parse(*args: Any, **kwargs: Any) -> Any:
        counts["parse"] += 1
        return parse(*args, **kwargs)

    def counted_validate(*args: Any, **kwargs: Any) -> Any:
        counts["validate"] += 1
        return validate(*args, **kwargs)

    monkeypatch.setattr(_requests, "decode_json", counted_parse)
    monkeypatch.setattr(_requests, "validate", counted_validate)
    agent = _echo_agent()
    chat = {"messages": ASK["input"]}
    cases = [
        ("/v1/responses", ASK),
        ("/responses", {**ASK, "stream": True}),
        ("/invocations", ASK),
        ("/v1/chat/completions", chat),
        ("/v1/chat/completions", {**chat, "stream": True}),
    ]
    with serve_in_thread(build_app(agent, api_token="")) as url:
        for path, body in cases:
            agent.seen.clear()
            counts.update(parse=0, validate=0)
            assert httpx.post(url + path, json=body, timeout=30).status_code == 200
            assert counts == {"parse": 1, "validate": 1}, path
            # The agent gets the validated object itself, so MLflow's wrapper does not validate again.
            (request,) = agent.seen
            assert type(request) is ResponsesAgentRequest, path


def test_openapi_documents_every_post_body(ours: str) -> None:
    schema = httpx.get(ours + "/openapi.json").json()
    posts = {path: ops["post"] for path, ops in schema["paths"].items() if "post" in ops}
    feedback = posts.pop("/v1/feedback")  # not an agent route: documented with its own body
    assert "value" in feedback["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(posts) == {"/responses", "/v1/responses", "/invocations", "/v1/chat/completions"}
    for path, op in posts.items():
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[1]
        properties = schema["components"]["schemas"][name]["properties"]
        assert ("messages" if "chat" in path else "input") in properties, path
        ok = op["responses"]["200"]["content"]
        answer = ok["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        key = "choices" if "chat" in path else "output"
        assert key in schema["components"]["schemas"][answer]["properties"], path
        assert "text/event-stream" in ok and "400" in op["responses"]
