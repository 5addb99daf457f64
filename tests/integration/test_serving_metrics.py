"""`/metrics` counts what the real `openai` client sent; every answer (refusals too) echoes x-request-id."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from ragworks.agents import build_agent
from ragworks.serving import build_app, serve_in_thread
from ragworks.serving.limits import ServingLimits
from ragworks.serving.metrics import ServingMetrics
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply
from ragworks.trace_export.retry_queue import ExportStats

pytestmark = pytest.mark.usefixtures("tracing_off")

QUESTION = [{"role": "user", "content": "What does the index folder hold?"}]


def samples(url: str, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The scraped samples as {(name, labels): value}, parsed by prometheus-client's own parser."""
    reply = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture()
def served(docs_index: str) -> Iterator[str]:
    agent = build_agent({"retriever": {"index": docs_index, "k": 2}})
    limits = ServingLimits(body_timeout_s=0.3, max_body_bytes=10_000)
    with serve_in_thread(build_app(agent, limits=limits, api_token="")) as url:
        yield url


def test_metrics_count_the_requests_sent(served: str) -> None:
    client = OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0, timeout=30)
    for _ in range(3):
        client.responses.create(model="ragworks", input=QUESTION)
    for _ in range(2):
        assert [e.type for e in client.responses.create(model="ragworks", input=QUESTION, stream=True)]
    chunks = client.chat.completions.create(model="ragworks", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="ragworks", input=[])
    assert httpx.get(served + "/no/such/route").status_code == 404

    found = samples(served)
    route = "/v1/responses"
    assert value(found, "ragworks_requests_total", route=route, method="POST", status="200") == 5
    assert value(found, "ragworks_requests_total", route=route, method="POST", status="400") == 1
    chat = "/v1/chat/completions"
    assert value(found, "ragworks_requests_total", route=chat, method="POST", status="200") == 1
    assert value(found, "ragworks_requests_total", route="other", method="GET", status="404") == 1
    assert value(found, "ragworks_request_duration_seconds_count", route=route) == 6
    assert value(found, "ragworks_time_to_first_token_seconds_count", route=route) == 2  # one per stream
    assert value(found, "ragworks_time_to_first_token_seconds_count", route=chat) == 1
    assert value(found, "ragworks_requests_in_flight") == 0
    errors = [(dict(labels), v) for (name, labels), v in found.items() if name == "ragworks_errors_total"]
    kinds = {labels["kind"]: v for labels, v in errors}
    assert kinds == {"empty_input": 1, "not_found": 1}, kinds
    assert ("ragworks_requests_total", frozenset({("route", "/metrics")})) not in found  # scrapes not counted


def test_a_failing_model_is_a_502_counted_by_kind(docs_index: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIStub() as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        config: dict[str, Any] = {
            "llm": "openai:stub-model",
            "llm_options": {"max_retries": 0},
            "retriever": {"type": "local", "index": docs_index, "k": 2},
        }
        with serve_in_thread(build_app(build_agent(config), api_token="")) as url:
            stub.enqueue(StubReply(status=500, error="the model broke"))
            sent = {"x-request-id": "r-502"}
            reply = httpx.post(url + "/v1/responses", json={"input": QUESTION}, headers=sent)
            assert reply.status_code == 502, reply.text
            assert reply.headers["x-request-id"] == "r-502"
            stub.enqueue(StubReply(content="The index holds chunks and vectors.", fault="drop"))
            broken = httpx.post(url + "/v1/responses", json={"input": QUESTION, "stream": True})
            assert broken.status_code == 200 and '"type": "error"' in broken.text  # the stream's end
            found = samples(url)
    route = "/v1/responses"
    assert value(found, "ragworks_requests_total", route=route, method="POST", status="502") == 1
    assert value(found, "ragworks_requests_total", route=route, method="POST", status="200") == 1
    assert value(found, "ragworks_errors_total", route=route, kind="model_error") == 2  # answer, stream
    assert value(found, "ragworks_requests_in_flight") == 0


def test_a_stream_the_client_leaves_is_counted_cancelled(served: str) -> None:
    with httpx.stream("POST", served + "/v1/responses", json={"input": QUESTION, "stream": True}) as reply:
        next(reply.iter_raw())  # the first event only, then hang up
    for _ in range(100):  # the server notices the closed socket on its next write
        found = samples(served)
        if value(found, "ragworks_errors_total", route="/v1/responses", kind="cancelled"):
            break
    assert value(found, "ragworks_errors_total", route="/v1/responses", kind="cancelled") == 1
    assert value(found, "ragworks_requests_in_flight") == 0


def test_every_answer_echoes_the_request_id(served: str) -> None:
    sent = {"x-request-id": "client-id-1"}
    ok = httpx.post(served + "/v1/responses", json={"input": QUESTION}, headers=sent)
    bad = httpx.post(served + "/v1/responses", content=b"{not json", headers=sent)  # error handler
    large = httpx.post(served + "/v1/responses", content=b"x" * 20_000, headers=sent)  # limits: 413
    missing = httpx.get(served + "/nope", headers=sent)
    assert [r.status_code for r in (ok, bad, large, missing)] == [200, 400, 413, 404]
    assert {r.headers["x-request-id"] for r in (ok, bad, large, missing)} == {"client-id-1"}
    malformed = {"x-request-id": "bad id; with spaces"}
    fresh = httpx.post(served + "/v1/responses", content=b"{", headers=malformed)
    assert fresh.status_code == 400 and len(fresh.headers["x-request-id"]) == 32  # replaced, not echoed
    assert _slow_body_reply(served).lower().count("x-request-id: slow-1") == 1


def _slow_body_reply(url: str) -> str:
    """Send headers that promise a body and never send it: the server's 408, as raw text."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50\r\nx-request-id: slow-1\r\n\r\n"
        )
        head = sock.recv(65536).decode()
    assert head.startswith("HTTP/1.1 408"), head
    return head


def test_metrics_follow_the_bearer_token(docs_index: str) -> None:
    agent = build_agent({"retriever": {"index": docs_index, "k": 2}})
    with serve_in_thread(build_app(agent, api_token="tok")) as url:
        refused = httpx.get(url + "/metrics")
        assert refused.status_code == 401 and refused.headers["x-request-id"]
        assert httpx.post(url + "/v1/responses", json={"input": QUESTION}).status_code == 401
        found = samples(url, authorization="Bearer tok")
    # The refused request counts (auth runs inside the metrics); the refused scrape does not.
    route = "/v1/responses"
    assert value(found, "ragworks_errors_total", route=route, kind="missing_api_key") == 1
    assert value(found, "ragworks_requests_total", route=route, method="POST", status="401") == 1
    assert value(found, "ragworks_requests_in_flight") == 0


def test_two_apps_in_one_process_keep_their_own_counts(docs_index: str) -> None:
    agent = build_agent({"retriever": {"index": docs_index, "k": 2}})
    with serve_in_thread(build_app(agent, api_token="")) as one, serve_in_thread(
        build_app(agent, api_token="")
    ) as two:
        httpx.post(one + "/v1/responses", json={"input": QUESTION})
        route = {"route": "/v1/responses", "method": "POST", "status": "200"}
        assert value(samples(one), "ragworks_requests_total", **route) == 1
        assert value(samples(two), "ragworks_requests_total", **route) == 0


def test_trace_export_counts_are_read_at_each_scrape() -> None:
    stats = [ExportStats(pending=3, stored=10, retried=1, dropped=0, failed_batches=0, last_error=None)]
    metrics = ServingMetrics(trace_stats=lambda: stats[-1], conversations=lambda: 7)

    def scraped() -> dict[str, float]:
        text = metrics.render().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    first = scraped()
    assert first["ragworks_traces_queued"] == 3 and first["ragworks_traces_stored_total"] == 10
    assert first["ragworks_trace_export_batched"] == 1 and first["ragworks_conversations_stored"] == 7
    stats.append(ExportStats(pending=0, stored=25, retried=1, dropped=2, failed_batches=1, last_error="x"))
    second = scraped()
    assert second["ragworks_traces_stored_total"] == 25 and second["ragworks_traces_dropped_total"] == 2
    assert second["ragworks_traces_queued"] == 0 and second["ragworks_traces_retried_total"] == 1
    unbatched = ServingMetrics(trace_stats=lambda: None).render().decode()
    assert "ragworks_trace_export_batched 0.0" in unbatched
