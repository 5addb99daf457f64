"""Every served request is one MLflow trace whose root is the agent's AGENT span (real MLflow, SQLite).

Each route, plain and streamed, is called with an `x-request-id`; the trace is found by that id (a tag)
and must have AGENT at the root, RETRIEVER and CHAT_MODEL below it, and the session and user of the
request. Streams that the client abandons, or that fail, still leave exactly one complete trace, with
an error status.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import httpx
import mlflow
import pytest
from mlflow.entities import SpanType, Trace
from mlflow.pyfunc import ResponsesAgent
from mlflow.tracing.constant import TraceMetadataKey
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from ragworks.agents import build_agent
from ragworks.errors import RetrievalError
from ragworks.serving import build_app, serve_in_thread
from ragworks.serving._abandon import SUPPORTED
from ragworks.serving._dispatch import REQUEST_ID_TAG

QUESTION = "How are traces recorded for each request?"
CONTEXT = {"conversation_id": "conv-9", "user_id": "grace"}
ROUTES = [
    ("/v1/responses", {"input": QUESTION, "context": CONTEXT}),
    ("/responses", {"input": [{"role": "user", "content": QUESTION}], "context": CONTEXT}),
    ("/invocations", {"input": [{"role": "user", "content": QUESTION}], "context": CONTEXT}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}], "user": "grace"}),
]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temp SQLite store; the sampling ratio unset, so every trace is kept (MLflow's default)."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACE_SAMPLING_RATIO", raising=False)
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('served-traces')}/mlflow.db")
    mlflow.tracing.reset()
    yield
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


@pytest.fixture(scope="module")
def base_url(tracking: None, docs_index: str) -> Iterator[str]:
    """The real agent (offline model, tiny index) behind the app."""
    agent = build_agent({"retriever": {"index": docs_index, "k": 3}})
    with serve_in_thread(build_app(agent, api_token="")) as url:
        yield url


def traces_of(request_id: str, *, count: int = 1, timeout: float = 30) -> list[Trace]:
    """The stored traces tagged with `request_id`, once `count` of them are complete (root span in)."""
    deadline = time.monotonic() + timeout
    while True:
        mlflow.flush_trace_async_logging()  # spans are exported on a background queue
        found = mlflow.search_traces(
            filter_string=f"tag.`{REQUEST_ID_TAG}` = '{request_id}'", return_type="list"
        )
        complete = [t for t in found if any(s.parent_id is None for s in t.data.spans)]
        if len(complete) >= count or time.monotonic() > deadline:
            return complete
        time.sleep(0.1)


def _root(trace: Trace) -> Any:
    (root,) = [span for span in trace.data.spans if span.parent_id is None]
    return root


def _send(url: str, path: str, body: dict[str, Any], stream: bool) -> str:
    request_id = uuid.uuid4().hex
    response = httpx.post(
        url + path, json={**body, "stream": stream}, headers={"x-request-id": request_id}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]")
    return request_id


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(("path", "body"), ROUTES, ids=[r[0] for r in ROUTES])
def test_each_route_makes_one_trace_rooted_at_the_agent_span(
    base_url: str, path: str, body: dict[str, Any], stream: bool
) -> None:
    request_id = _send(base_url, path, body, stream)
    (trace,) = traces_of(request_id)
    root = _root(trace)
    assert root.span_type == SpanType.AGENT and root.name == ("predict_stream" if stream else "predict")
    types = {span.span_type for span in trace.data.spans if span.parent_id is not None}
    assert {SpanType.RETRIEVER, SpanType.CHAT_MODEL} <= types, types
    assert "serve_invoke" not in {span.name for span in trace.data.spans}
    assert trace.info.state == "OK"
    metadata = trace.info.trace_metadata
    assert metadata[TraceMetadataKey.TRACE_USER] == "grace"
    if "messages" not in body:
        assert metadata[TraceMetadataKey.TRACE_SESSION] == "conv-9"


def test_the_returned_trace_id_is_the_agent_trace(base_url: str) -> None:
    headers = {"x-mlflow-return-trace-id": "true"}
    body = {"input": QUESTION}
    answer = httpx.post(base_url + "/v1/responses", json=body, headers=headers, timeout=60).json()
    trace = mlflow.get_trace(answer["metadata"]["trace_id"], flush=True)
    assert trace is not None and _root(trace).span_type == SpanType.AGENT
    text = httpx.post(
        base_url + "/responses", json={**body, "stream": True}, headers=headers, timeout=60
    ).text
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]" and "trace_id" in json.loads(lines[-2])
    trace = mlflow.get_trace(json.loads(lines[-2])["trace_id"], flush=True)
    assert trace is not None and _root(trace).span_type == SpanType.AGENT


class SlowAgent(ResponsesAgent):
    """Streams ten words slowly, inside a RETRIEVER child span; optionally fails after three."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        """Not used here."""
        raise NotImplementedError

    def predict_stream(
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        """One delta every 50 ms."""
        with mlflow.start_span("lookup", span_type=SpanType.RETRIEVER):
            for n in range(10):
                if self.fail and n == 3:
                    raise RetrievalError("The index went away; run `ragworks ingest` again.")
                time.sleep(0.05)
                yield ResponsesAgentStreamEvent(**self.create_text_delta(f"word{n} ", "msg_1"))


def test_the_abandon_hook_matches_this_mlflow() -> None:
    assert SUPPORTED, "MLflow's generator wrapper changed: abandoned streams would leave no trace"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"input": QUESTION, "stream": True}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}], "stream": True}),
    ],
    ids=["responses", "chat"],
)
def test_an_abandoned_stream_leaves_one_complete_cancelled_trace(
    tracking: None, path: str, body: dict[str, Any]
) -> None:
    with serve_in_thread(build_app(SlowAgent(), api_token="")) as url:
        request_id = uuid.uuid4().hex
        headers = {"x-request-id": request_id}
        with httpx.stream("POST", url + path, json=body, headers=headers, timeout=30) as response:
            for line in response.iter_lines():
                if "word0" in line:
                    break  # hang up after the first word
        (trace,) = traces_of(request_id)
    assert trace.info.state == "ERROR"
    root = _root(trace)
    assert root.span_type == SpanType.AGENT and "Cancelled" in root.status.description
    (child,) = [span for span in trace.data.spans if span.parent_id is not None]
    assert child.span_type == SpanType.RETRIEVER and child.parent_id == root.span_id
    time.sleep(0.5)
    assert len(traces_of(request_id, count=2, timeout=0)) == 1  # and no second one


def test_a_stream_that_fails_ends_with_an_error_and_its_trace_says_so(tracking: None) -> None:
    with serve_in_thread(build_app(SlowAgent(fail=True), api_token="")) as url:
        request_id = uuid.uuid4().hex
        headers = {"x-request-id": request_id}
        body = {"input": QUESTION, "stream": True}
        text = httpx.post(url + "/v1/responses", json=body, headers=headers, timeout=30).text
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["type"] == "error"
        assert not any('"response.completed"' in event for event in events)
        chat = {"messages": [{"role": "user", "content": QUESTION}], "stream": True}
        text = httpx.post(url + "/v1/chat/completions", json=chat, timeout=30).text
        chunks = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert chunks[-1] == "[DONE]" and "index went away" in json.loads(chunks[-2])["error"]["message"]
        (trace,) = traces_of(request_id)
    assert trace.info.state == "ERROR" and _root(trace).span_type == SpanType.AGENT


def test_a_stream_dropped_before_its_agent_ran_still_leaves_one_cancelled_trace(tracking: None) -> None:
    """One worker, busy: a second stream waits in the queue, its client leaves, its trace remains."""
    from ragworks.serving.limits import ServingLimits

    app = build_app(SlowAgent(), api_token="", limits=ServingLimits(agent_threads=1))
    with serve_in_thread(app) as url:
        body = {"input": QUESTION, "stream": True}
        busy = uuid.uuid4().hex
        with httpx.stream("POST", url + "/v1/responses", json=body, headers={"x-request-id": busy}) as first:
            lines = first.iter_lines()
            next(line for line in lines if "word0" in line)  # the one worker now runs this stream
            queued = uuid.uuid4().hex
            with httpx.stream(
                "POST", url + "/v1/responses", json=body, headers={"x-request-id": queued}, timeout=30
            ) as second:
                next(line for line in second.iter_lines() if "response.created" in line)
            for _ in lines:  # the first stream goes on to its end
                pass
        (trace,) = traces_of(queued)
    assert trace.info.state == "ERROR"
    (root,) = trace.data.spans  # the agent never ran: its AGENT span alone
    assert root.span_type == SpanType.AGENT and root.name == "predict_stream"
    assert "Cancelled" in root.status.description and "before the agent started" in root.status.description
    assert root.inputs["request"]["input"][0]["content"] == QUESTION
    (done,) = traces_of(busy)
    assert done.info.state == "OK"


@pytest.mark.parametrize("route", ["responses", "chat"])
def test_a_stream_closed_at_its_first_event_leaves_one_cancelled_trace(tracking: None, route: str) -> None:
    """The client left before the agent was even called: the request is still one trace."""
    from ragworks.serving import openai_compat
    from ragworks.serving._dispatch import Call, _responses_events
    from ragworks.serving._requests import parse_chat, parse_responses

    runtime = build_app(SlowAgent(), api_token="").state.ragworks
    request_id = uuid.uuid4().hex
    call = Call(request_id=request_id, return_trace_id=False, headers={})
    if route == "responses":
        raw = json.dumps({"input": QUESTION, "stream": True}).encode()
        parsed = parse_responses(raw, max_input_chars=1000)
        events = _responses_events(runtime, parsed.request, call, None)
    else:
        body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True}
        chat, request = parse_chat(json.dumps(body).encode(), max_input_chars=1000)
        events = openai_compat._chunks(runtime, chat, request, call, None)

    async def leave_after_the_first_event() -> str:
        first = await anext(events)
        await events.aclose()
        return first

    assert asyncio.run(leave_after_the_first_event()).startswith("data: ")
    (trace,) = traces_of(request_id)
    (root,) = trace.data.spans
    assert root.span_type == SpanType.AGENT and "Cancelled" in root.status.description
    runtime.runner.close()
