"""Feedback on served answers: `POST /v1/feedback` stores an MLflow assessment on the answer's trace.

Real server on 127.0.0.1 (offline model, tiny index), real MLflow with a temp SQLite store, traces
stored by MLflow's own exporter a moment after each answer, the real `openai` client. Feedback posted
right after an answer names a trace that may not be stored yet: the route looks again (bounded), and
one case stores the trace only after the feedback arrived. `ragworks eval export-feedback` then turns
the traces with feedback into a suite.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import openai
import pytest
import yaml
from mlflow.entities import Feedback
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from ragworks.agents import build_agent
from ragworks.cli import app as cli
from ragworks.eval.suite import EvalSuite
from ragworks.serving import _feedback_lookup, build_app, serve_in_thread
from ragworks.serving._dispatch import RESPONSE_ID_TAG
from ragworks.serving.feedback import FEEDBACK_NAME
from ragworks.trace_export import batch
from ragworks.trace_export.batch import install_batch_export
from ragworks.trace_export.retry_queue import ExportStats

EXPERIMENT = "feedback-prod"
QUESTION = "How does the index combine BM25 and dense vectors?"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temp SQLite store and experiment, traces stored by the batch writer as `ragworks serve` does."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('feedback')}/mlflow.db")
    mlflow.tracing.reset()
    mlflow.set_experiment(EXPERIMENT)  # before the exporter: set_experiment resets MLflow's tracing
    exporter = install_batch_export()
    assert exporter is not None and exporter.writer is not None
    exporter.writer.start()  # as `ragworks serve` does: the first answers' traces need not wait for it
    with mlflow.start_span("warm-up"):
        pass
    mlflow.flush_trace_async_logging()  # the writer process is up (its imports take seconds)
    yield
    exporter.close()
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


@pytest.fixture(scope="module")
def base_url(tracking: None, docs_index: str) -> Iterator[str]:
    agent = build_agent({"retriever": {"index": docs_index, "k": 3}})
    with serve_in_thread(build_app(agent, api_token="")) as url:
        yield url


def feedbacks(trace_id: str) -> list[Feedback]:
    trace = mlflow.get_trace(trace_id)
    assert trace is not None
    return [a for a in trace.info.assessments if isinstance(a, Feedback) and a.name == FEEDBACK_NAME]


def test_feedback_on_a_response_lands_on_its_trace_and_in_the_exported_suite(
    base_url: str, tmp_path: Path
) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused")
    answer = client.responses.create(model="ragworks", input=QUESTION)
    # At once, before the trace is (likely) stored: the route looks again until it is.
    posted = httpx.post(
        base_url + "/v1/feedback",
        json={"response_id": answer.id, "value": False, "comment": "missed the fusion", "user": "ada"},
        timeout=30,
    )
    assert posted.status_code == 200, posted.text
    recorded = posted.json()
    assert recorded["response_id"] == answer.id and recorded["value"] is False

    found = mlflow.search_traces(
        filter_string=f"feedback.`{FEEDBACK_NAME}` IS NOT NULL", return_type="list", flush=True
    )
    (trace,) = [t for t in found if t.info.trace_id == recorded["trace_id"]]
    assert trace.info.tags[RESPONSE_ID_TAG] == answer.id
    (feedback,) = feedbacks(trace.info.trace_id)
    assert feedback.value is False and feedback.rationale == "missed the fusion"
    assert feedback.source.source_type == "HUMAN" and feedback.source.source_id == "ada"
    assert feedback.assessment_id == recorded["id"]

    good = client.responses.create(model="ragworks", input="Where is the index stored?")
    ok = httpx.post(base_url + "/v1/feedback", json={"response_id": good.id, "value": True}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert feedbacks(ok.json()["trace_id"])[0].source.source_id == "anonymous"

    out = tmp_path / "suite.yaml"
    result = CliRunner().invoke(cli, ["eval", "export-feedback", "--experiment", EXPERIMENT, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 positive, 1 negative" in result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Exported by `ragworks eval export-feedback`") and EXPERIMENT in text
    rows = {row.inputs["question"]: row for row in EvalSuite.load(out).rows}
    rejected, approved = rows[QUESTION], rows["Where is the index stored?"]
    assert rejected.expectations is None and rejected.tags["feedback"] == "negative"
    assert rejected.tags["feedback_comment"] == "missed the fusion"
    assert rejected.tags["source_trace_id"] == recorded["trace_id"]
    assert rejected.tags["answer_given"] == answer.output_text
    assert approved.expectations is not None
    assert approved.expectations.expected_response == good.output_text
    assert yaml.safe_load(text)["name"] == f"feedback-{EXPERIMENT}"


def test_feedback_by_trace_id_with_a_rating(base_url: str) -> None:
    headers = {"x-mlflow-return-trace-id": "true"}
    body = {"input": QUESTION}
    answer = httpx.post(base_url + "/v1/responses", json=body, headers=headers, timeout=30).json()
    trace_id = answer["metadata"]["trace_id"]
    posted = httpx.post(base_url + "/v1/feedback", json={"trace_id": trace_id, "value": 4}, timeout=30)
    assert posted.status_code == 200, posted.text
    assert [f.value for f in feedbacks(trace_id)] == [4]


def test_feedback_on_a_streamed_answer_names_the_id_of_its_created_event(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused")
    events = list(client.responses.create(model="ragworks", input=QUESTION, stream=True))
    created = next(e for e in events if e.type == "response.created")
    completed = next(e for e in events if e.type == "response.completed")
    assert completed.response.id == created.response.id
    body = {"response_id": created.response.id, "value": True, "comment": "clear"}
    posted = httpx.post(base_url + "/v1/feedback", json=body, timeout=30)
    assert posted.status_code == 200, posted.text
    trace = mlflow.get_trace(posted.json()["trace_id"])
    assert trace is not None and trace.info.tags[RESPONSE_ID_TAG] == created.response.id
    assert [f.rationale for f in feedbacks(trace.info.trace_id)] == ["clear"]


@pytest.mark.parametrize("stream", [False, True])
def test_feedback_on_a_chat_completion_names_its_id(base_url: str, stream: bool) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": QUESTION}]
    if stream:
        chunks = list(client.chat.completions.create(model="ragworks", messages=messages, stream=True))
        assert len({c.id for c in chunks}) == 1
        completion_id = chunks[0].id
    else:
        completion_id = client.chat.completions.create(model="ragworks", messages=messages).id
    assert completion_id.startswith("chatcmpl-")
    body = {"response_id": completion_id, "value": 2}
    posted = httpx.post(base_url + "/v1/feedback", json=body, timeout=30)
    assert posted.status_code == 200, posted.text
    assert [f.value for f in feedbacks(posted.json()["trace_id"])] == [2]


def test_feedback_that_arrives_before_its_trace_waits_for_it(base_url: str) -> None:
    response_id = f"resp_{uuid.uuid4().hex}"

    def store_later() -> None:
        time.sleep(0.6)
        with mlflow.start_span("late answer"):
            mlflow.update_current_trace(tags={RESPONSE_ID_TAG: response_id})

    writer = threading.Thread(target=store_later)
    start = time.monotonic()
    writer.start()
    posted = httpx.post(base_url + "/v1/feedback", json={"response_id": response_id, "value": 1}, timeout=30)
    writer.join()
    assert posted.status_code == 200, posted.text
    assert time.monotonic() - start >= 0.6  # it really was not stored when the feedback came
    assert [f.value for f in feedbacks(posted.json()["trace_id"])] == [1]


def test_unknown_ids_are_404_within_the_bound(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_feedback_lookup, "WAIT_S", 0.5)
    for body in ({"response_id": "resp_" + "0" * 32, "value": True}, {"trace_id": "tr-nope", "value": 0.5}):
        start = time.monotonic()
        answer = httpx.post(base_url + "/v1/feedback", json=body, timeout=30)
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["type"] == "not_found_error" and "No stored trace" in error["message"]
        assert time.monotonic() - start < 3


def test_feedback_while_traces_still_wait_for_the_store_is_a_409(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    behind = ExportStats(pending=3, stored=0, retried=0, dropped=0, failed_batches=0, last_error=None)
    monkeypatch.setattr(batch, "trace_export_stats", lambda: behind)
    monkeypatch.setattr(_feedback_lookup, "WAIT_S", 0.3)
    body = {"response_id": "resp_" + "1" * 32, "value": True}
    answer = httpx.post(base_url + "/v1/feedback", json=body, timeout=30)
    assert answer.status_code == 409, answer.text
    assert answer.headers["Retry-After"] == "2"
    assert "still being stored" in answer.json()["error"]["message"]


def test_a_store_that_refuses_the_feedback_is_a_502_not_a_200(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"x-mlflow-return-trace-id": "true"}
    answer = httpx.post(base_url + "/v1/responses", json={"input": QUESTION}, headers=headers, timeout=30)
    trace_id = answer.json()["metadata"]["trace_id"]

    def read_only(**_: object) -> None:
        raise MlflowException("(sqlite3.OperationalError) attempt to write a readonly database")

    monkeypatch.setattr(mlflow, "log_feedback", read_only)
    posted = httpx.post(base_url + "/v1/feedback", json={"trace_id": trace_id, "value": True}, timeout=30)
    assert posted.status_code == 502, posted.text
    error = posted.json()["error"]
    assert error["code"] == "tracking_store_error" and "readonly database" in error["message"]
    monkeypatch.undo()
    assert feedbacks(trace_id) == []


BAD = {
    "a string value": b'{"response_id": "resp_1", "value": "yes"}',
    "a null value": b'{"response_id": "resp_1", "value": null}',
    "no value": b'{"response_id": "resp_1"}',
    "NaN": b'{"response_id": "resp_1", "value": NaN}',
    "a float beyond a double": b'{"response_id": "resp_1", "value": 1e400}',
    "an int of 400 digits": b'{"response_id": "resp_1", "value": ' + b"9" * 400 + b"}",
    "a list value": b'{"response_id": "resp_1", "value": [true]}',
    "both ids": b'{"response_id": "resp_1", "trace_id": "tr-1", "value": true}',
    "neither id": b'{"value": true}',
    "an unknown field": b'{"response_id": "resp_1", "value": true, "rating": 5}',
    "an empty id": b'{"response_id": "", "value": true}',
    "not JSON": b"thumbs up",
    "a JSON array": b"[1]",
    "an empty body": b"",
    "arrays nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("name", list(BAD))
def test_malformed_feedback_is_a_400_in_openai_shape(base_url: str, name: str) -> None:
    answer = httpx.post(
        base_url + "/v1/feedback", content=BAD[name], headers={"Content-Type": "application/json"}, timeout=30
    )
    assert answer.status_code == 400, f"{name}: {answer.status_code} {answer.text[:300]}"
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("Invalid feedback")


def test_the_route_is_documented_for_the_fuzzer(base_url: str) -> None:
    schema = httpx.get(base_url + "/openapi.json", timeout=30).json()
    operation = schema["paths"]["/v1/feedback"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"response_id", "trace_id", "value", "comment", "user"} <= set(body["properties"])
    assert {"200", "400", "404", "409"} <= set(operation["responses"])


def test_export_errors_are_one_line(tracking: None, tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "s.yaml")
    unknown = runner.invoke(cli, ["eval", "export-feedback", "--experiment", "no-such-exp", "-o", out])
    assert unknown.exit_code == 1 and "No MLflow experiment named 'no-such-exp'" in unknown.output
    mlflow.MlflowClient().create_experiment("feedback-empty")
    empty = runner.invoke(cli, ["eval", "export-feedback", "--experiment", "feedback-empty", "-o", out])
    assert empty.exit_code == 1 and "No traces with feedback" in empty.output
    for result in (unknown, empty):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not Path(out).exists()
