"""Capacity holds under slow clients, large bodies and hung models: real requests keep being answered."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from ragworks.agents import deadline
from ragworks.serving import ServingLimits, build_app, serve_in_thread
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

ASK = {"input": [{"role": "user", "content": "What does the index hold?"}]}
ANSWER = "The index holds JSON files [1]."

pytestmark = pytest.mark.usefixtures("tracing_off")  # capacity, not tracing: no store in the timings


class GateAgent(ResponsesAgent):
    """Answers at once, except while `hang` is set: then a call waits for `release`, as a hung model
    client would; when `patient` it gives up (TimeoutError) once the request's deadline is cancelled."""

    def __init__(self, *, patient: bool = False) -> None:
        self.patient = patient
        self.hang = threading.Event()
        self.release = threading.Event()
        self.seen: list[dict[str, Any]] = []
        """One record per hung call: the deadline's remaining time on entry and when it was cancelled."""

    def _wait(self) -> None:
        if not self.hang.is_set():
            return
        record: dict[str, Any] = {"remaining": deadline.remaining(), "cancelled_after": None}
        self.seen.append(record)
        start = time.monotonic()
        while not self.release.is_set() and time.monotonic() - start < 30:
            if self.patient and deadline.cancelled():
                record["cancelled_after"] = time.monotonic() - start
                raise TimeoutError("The model call was cancelled with its request.")
            time.sleep(0.01)

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        """One answer, after the gate."""
        self._wait()
        return ResponsesAgentResponse(output=[self.create_text_output_item(ANSWER, "msg_1")])

    def predict_stream(
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        """A first delta, the gate, then the rest."""
        yield ResponsesAgentStreamEvent(**self.create_text_delta("The ", "msg_1"))
        self._wait()
        yield ResponsesAgentStreamEvent(**self.create_text_delta(ANSWER[4:], "msg_1"))
        item = self.create_text_output_item(ANSWER, "msg_1")
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=item)


@pytest.fixture()
def serve() -> Iterator[Any]:
    """serve(agent, **limits) -> base URL; every server is stopped (and every gate opened) at the end."""
    stack: list[Any] = []
    agents: list[ResponsesAgent] = []

    def start(agent: ResponsesAgent, **limits: Any) -> str:
        context = serve_in_thread(build_app(agent, limits=ServingLimits(**limits), api_token=""))
        stack.append(context)
        agents.append(agent)
        url = str(context.__enter__())
        # The first request pays one-off costs (imports, MLflow setup) that would skew the timings.
        assert httpx.post(url + "/v1/responses", json=ASK, timeout=120).status_code == 200
        return url

    yield start
    for agent in agents:
        if isinstance(agent, GateAgent):
            agent.release.set()
    for context in reversed(stack):
        context.__exit__(None, None, None)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _slow_client(url: str, *, declared: int = 4000, sent: bytes = b'{"input": "wh') -> socket.socket:
    """A client that sends its headers and the start of a body, then nothing."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_slow_bodies_do_not_take_agent_slots(serve: Any) -> None:
    url = serve(GateAgent(), max_concurrency=4, body_timeout_s=30)
    slow = [_slow_client(url) for _ in range(100)]
    try:
        time.sleep(0.3)  # every slow client is past its headers and waiting on its body
        latencies = []
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(20):
                start = time.perf_counter()
                response = client.post("/v1/responses", json=ASK)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
        assert _p99(latencies) < 2.0, latencies
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(
    ("limits", "cut_after"),
    [({"body_timeout_s": 0.5}, 0.5), ({"body_timeout_s": 30, "timeout_s": 0.5}, 0.5)],
    ids=["body-deadline", "capped-by-request-timeout"],
)
def test_a_trickled_body_is_cut_off_with_408(serve: Any, limits: dict[str, float], cut_after: float) -> None:
    url = serve(GateAgent(), max_concurrency=1, **limits)
    sock = _slow_client(url)
    start = time.monotonic()
    status, headers, body = _read_response(sock)
    elapsed = time.monotonic() - start
    sock.close()
    assert status == 408, body
    assert headers.get("connection") == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "body_timeout" and "body" in error["message"] and error["type"], error
    assert cut_after * 0.8 <= elapsed < cut_after + 1.5, elapsed
    assert httpx.post(url + "/v1/responses", json=ASK, timeout=10).status_code == 200  # the slot is free


SENDERS = """
import asyncio, json, sys, time, httpx
url, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
body = json.dumps({"input": [{"role": "user", "content": "word " * 200_000}]}).encode()
statuses = []
async def sender(client, stop):
    while time.monotonic() < stop:
        headers = {"Content-Type": "application/json"}
        response = await client.post("/v1/responses", content=body, headers=headers)
        statuses.append(response.status_code)
async def main():
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as c:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(sender(c, stop) for _ in range(clients)))
asyncio.run(main())
print(json.dumps(statuses))
"""
"""16 clients posting 1 MB bodies for a while, in their own process (so they do not share the GIL with
the server thread under test); prints the statuses they got."""


@pytest.mark.slow  # 4 s of load; a timing test, so a machine loaded by other work can push it over
def test_health_stays_fast_while_large_bodies_arrive(serve: Any) -> None:
    url = serve(GateAgent(), max_body_bytes=2 * 1024 * 1024, max_input_chars=2_000_000, max_concurrency=32)
    senders = subprocess.Popen(
        [sys.executable, "-c", SENDERS, url, "16", "4"], stdout=subprocess.PIPE, text=True
    )
    probes = []
    with httpx.Client(base_url=url, timeout=30) as client:
        time.sleep(1.0)  # the senders' interpreter starts, then their 16 bodies are on the way
        while senders.poll() is None:
            start = time.perf_counter()
            assert client.get("/health").status_code == 200
            probes.append(time.perf_counter() - start)
            time.sleep(0.01)
    out, _ = senders.communicate(timeout=60)
    statuses = json.loads(out)
    assert len(statuses) >= 16 and set(statuses) == {200}, set(statuses)
    assert len(probes) > 20
    assert _p99(probes) < 0.1, sorted(probes)[-5:]


def test_a_timed_out_request_frees_its_slot_and_its_thread(serve: Any) -> None:
    agent = GateAgent()  # a hung call ignores its deadline, like a client stuck in a long read
    url = serve(agent, max_concurrency=1, agent_threads=1, timeout_s=0.5)
    agent.hang.set()
    with httpx.Client(base_url=url, timeout=10) as client:
        response = client.post("/v1/responses", json=ASK)
        assert response.status_code == 504, response.text
        stream = client.post("/v1/responses", json={**ASK, "stream": True}).text
        assert '"code": "timeout"' in stream or '"code":"timeout"' in stream, stream[-300:]
        agent.hang.clear()  # the model recovers; both hung calls are still stuck
        for body in (ASK, {**ASK, "stream": True}):
            start = time.monotonic()
            response = client.post("/v1/responses", json=body)
            assert response.status_code == 200 and "JSON files" in response.text, response.text
            assert time.monotonic() - start < 0.5
    assert len(agent.seen) == 2


def test_the_deadline_reaches_the_agent_and_is_cancelled_on_timeout(serve: Any) -> None:
    agent = GateAgent(patient=True)
    url = serve(agent, timeout_s=0.5)
    agent.hang.set()
    assert httpx.post(url + "/v1/responses", json=ASK, timeout=10).status_code == 504
    time.sleep(0.3)
    (record,) = agent.seen
    assert record["remaining"] is not None and 0 < record["remaining"] <= 0.5
    assert record["cancelled_after"] is not None and record["cancelled_after"] < 0.7, record


def test_a_client_that_leaves_a_stream_cancels_the_agent(serve: Any) -> None:
    agent = GateAgent(patient=True)
    url = serve(agent, timeout_s=30)
    agent.hang.set()
    for path, body in [
        ("/v1/responses", {**ASK, "stream": True}),
        ("/v1/chat/completions", {"messages": ASK["input"], "stream": True}),
    ]:
        with httpx.stream("POST", url + path, json=body, timeout=10) as response:
            for line in response.iter_lines():
                if "The " in line:
                    break  # hang up after the first token
        left = time.monotonic()
        while len(agent.seen) and agent.seen[-1]["cancelled_after"] is None:
            assert time.monotonic() - left < 2.0, "the agent was not told the client left"
            time.sleep(0.02)
    assert len(agent.seen) == 2


def test_after_a_hung_model_recovers_the_next_request_is_answered(
    serve: Any, docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.agents import build_agent

    hung = threading.Event()
    release = threading.Event()

    def responder(body: dict[str, Any]) -> StubReply:
        if hung.is_set():
            release.wait(30)  # a model that accepted the request and never answers
        return StubReply(content="The index holds JSON files [1].")

    with OpenAIStub(responder=responder) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        agent = build_agent({"retriever": {"index": docs_index, "k": 2}, "llm": "openai:stub-model"})
        url = serve(agent, timeout_s=1.0, agent_threads=2, max_concurrency=4)
        try:
            hung.set()
            with httpx.Client(base_url=url, timeout=10) as client:

                def ask() -> httpx.Response:
                    return client.post("/v1/responses", json=ASK)

                with_threads = [threading.Thread(target=ask) for _ in range(2)]
                for thread in with_threads:
                    thread.start()
                for thread in with_threads:
                    thread.join()
                calls = len(stub.requests)
                hung.clear()  # recovered: new calls answer at once
                start = time.monotonic()
                response = ask()
                elapsed = time.monotonic() - start
            assert response.status_code == 200, response.text
            assert elapsed < 1.0, elapsed
            assert len(stub.requests) > calls  # the model was called again, not skipped
        finally:
            release.set()


@pytest.fixture()
def header_deadline_server() -> Iterator[str]:
    """The app on uvicorn with the header-deadline protocol (0.5 s), as `ragworks serve` can run it."""
    import uvicorn

    from ragworks.serving._header_deadline import http_protocol

    protocol = http_protocol(0.5)
    assert not isinstance(protocol, str), "the header deadline fell back to uvicorn's own protocol"
    app = build_app(GateAgent(), limits=ServingLimits(body_timeout_s=5), api_token="")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=protocol, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.mark.parametrize(
    "sent", [b"", b"POST /v1/responses HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "trickled"]
)
def test_late_headers_are_cut_off_with_408(header_deadline_server: str, sent: bytes) -> None:
    url = header_deadline_server
    parts = urlsplit(url)
    with httpx.Client(base_url=url, timeout=10) as client:  # a kept-alive client is not cut off
        for _ in range(2):
            assert client.post("/v1/responses", json=ASK).status_code == 200
            time.sleep(0.7)  # idle between requests: uvicorn's keep-alive (5 s) applies, not the 0.5 s
        sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
        sock.sendall(sent)
        start = time.monotonic()
        status, _, body = _read_response(sock)
        elapsed = time.monotonic() - start
        sock.close()
        assert status == 408 and json.loads(body)["error"]["code"] == "header_timeout"
        assert 0.4 <= elapsed < 2.0, elapsed
        assert client.post("/v1/responses", json=ASK).status_code == 200
