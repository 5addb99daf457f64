"""Batched trace export (servers and eval runs): every trace lands, complete, in a temp SQLite store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest
import sqlalchemy
from mlflow.entities import SpanType, Trace
from mlflow.exceptions import MlflowException
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import SpanAttributeKey, SpansLocation, TraceMetadataKey, TraceTagKey
from mlflow.utils.mlflow_tags import MLFLOW_ARTIFACT_LOCATION

from ragworks.agents import build_agent
from ragworks.agents.tracing import CONFIG_TAG
from ragworks.config import AgentConfig
from ragworks.trace_export.batch import (
    BatchTraceExporter,
    PendingTrace,
    TraceBatchQueue,
    batched_export,
    install_batch_export,
    tune_sqlite,
)
from ragworks.trace_export.writer import one_transaction, store_traces

REQUEST = {
    "input": [{"role": "user", "content": "How are logged agents loaded back?"}],
    "context": {"conversation_id": "conv-9", "user_id": "ada"},
}


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[BatchTraceExporter]:
    """The batch exporter under MLflow's tracing, storing into a temp SQLite database."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.tracing.reset()
    installed = install_batch_export()
    assert installed is not None
    yield installed
    installed.queue.flush()
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


def test_every_trace_lands_with_its_spans(exporter: BatchTraceExporter, docs_index: str) -> None:
    config = AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2})
    agent = build_agent(config)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: agent.predict(REQUEST), range(40)))
    mlflow.flush_trace_async_logging()  # MLflow's own flush drains the batch writer

    traces = mlflow.search_traces(return_type="list", max_results=100)
    assert len(traces) == 40
    trace = traces[0]
    assert sorted(s.span_type for s in trace.data.spans) == sorted(
        [SpanType.AGENT, SpanType.RETRIEVER, SpanType.CHAT_MODEL]
    )
    (retriever,) = trace.search_spans(span_type=SpanType.RETRIEVER)
    assert retriever.outputs[0]["metadata"]["doc_uri"].endswith(".md")
    (chat,) = trace.search_spans(span_type=SpanType.CHAT_MODEL)
    assert chat.get_attribute(SpanAttributeKey.CHAT_USAGE)["output_tokens"] > 0
    assert trace.info.tags[CONFIG_TAG] == config.fingerprint()
    assert trace.info.tags[TraceTagKey.SPANS_LOCATION] == SpansLocation.TRACKING_STORE.value
    assert trace.info.trace_metadata[TraceMetadataKey.TRACE_SESSION] == "conv-9"
    assert exporter._writer is not None  # stored by the writer process, not the fallback


def test_traces_still_land_when_the_writer_process_dies(
    exporter: BatchTraceExporter, docs_index: str
) -> None:
    build_agent(AgentConfig(retriever={"type": "local", "index": docs_index})).predict(REQUEST)
    mlflow.flush_trace_async_logging()  # the first batch starts the writer process
    assert exporter._writer is not None and exporter._writer._proc is not None
    exporter._writer._proc.kill()
    exporter._writer._proc.wait()
    agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index}))
    for _ in range(3):
        agent.predict(REQUEST)
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(return_type="list")
    assert len(traces) == 4 and all(len(t.data.spans) == 3 for t in traces)
    assert exporter._writer is None  # fell back to storing in-process


def test_get_trace_with_flush_sees_the_last_trace(exporter: BatchTraceExporter, docs_index: str) -> None:
    build_agent(AgentConfig(retriever={"type": "local", "index": docs_index})).predict(REQUEST)
    trace_id = mlflow.get_last_active_trace_id()
    assert trace_id is not None
    trace = mlflow.get_trace(trace_id, flush=True)
    assert trace is not None and len(trace.data.spans) == 3


def _stored_traces(exporter: BatchTraceExporter, docs_index: str, n: int) -> list[Trace]:
    agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2}))
    for _ in range(n):
        agent.predict(REQUEST)
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(return_type="list", max_results=n)
    for trace in traces:  # as the server hands them over: not yet given a place by a store
        trace.info.tags.pop(MLFLOW_ARTIFACT_LOCATION)
    return traces


def _fresh_store(path: Path) -> tuple[TracingClient, list[int]]:
    """A TracingClient on a new SQLite store, and a list that counts its database commits."""
    uri = f"sqlite:///{path}"
    tune_sqlite(uri)
    client = TracingClient(uri)
    commits: list[int] = []
    sqlalchemy.event.listen(client.store.engine, "commit", lambda _conn: commits.append(1))
    return client, commits


def test_writer_stores_a_batch_in_one_transaction(
    exporter: BatchTraceExporter, docs_index: str, tmp_path: Path
) -> None:
    traces = _stored_traces(exporter, docs_index, 5)
    client, commits = _fresh_store(tmp_path / "copy.db")
    store_traces(client, traces)
    assert len(commits) == 1
    for trace in traces:
        copy = client.get_trace(trace.info.trace_id)
        assert len(copy.data.spans) == 3
        assert copy.info.trace_metadata[TraceMetadataKey.TRACE_SESSION] == "conv-9"


def test_writer_redoes_a_batch_trace_by_trace_when_a_trace_already_exists(
    exporter: BatchTraceExporter, docs_index: str, tmp_path: Path
) -> None:
    traces = _stored_traces(exporter, docs_index, 4)
    client, commits = _fresh_store(tmp_path / "copy.db")
    store_traces(client, traces[:1])
    store_traces(client, traces)  # the first one is there: MLflow's merge path must not lose the rest
    assert len(commits) > 2
    found = client.search_traces(locations=["0"], max_results=10)
    assert sorted(t.info.trace_id for t in found) == sorted(t.info.trace_id for t in traces)
    assert all(len(client.get_trace(t.info.trace_id).data.spans) == 3 for t in traces)


def test_one_transaction_leaves_other_threads_their_own_sessions(
    exporter: BatchTraceExporter, docs_index: str, tmp_path: Path
) -> None:
    (trace,) = _stored_traces(exporter, docs_index, 1)
    client, _ = _fresh_store(tmp_path / "copy.db")
    seen: list[bool] = []

    def look() -> None:  # another thread of the process, reading through the same store object
        try:
            client.store.get_trace_info(trace.info.trace_id)
            seen.append(True)
        except MlflowException:
            seen.append(False)

    with pytest.raises(Exception, match="abort"), one_transaction(client.store):
        client.start_trace(trace.info)  # written in the shared, not yet committed transaction
        other = threading.Thread(target=look)
        other.start()
        other.join()
        raise RuntimeError("abort")
    assert seen == [False]  # its own session: it does not see the uncommitted write
    assert client.search_traces(locations=["0"], max_results=10) == []  # rolled back as a whole


def test_writer_retries_a_batch_sqlite_refused_as_locked(
    exporter: BatchTraceExporter, docs_index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = _stored_traces(exporter, docs_index, 3)
    client, commits = _fresh_store(tmp_path / "copy.db")
    real = client.store.start_trace
    refusals = []

    def locked_once(trace_info: Any) -> Any:
        if not refusals:
            refusals.append(trace_info.trace_id)
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return real(trace_info)

    monkeypatch.setattr(client.store, "start_trace", locked_once)
    store_traces(client, traces)
    assert refusals and len(commits) == 1  # the batch went again, still as one transaction
    assert all(len(client.get_trace(t.info.trace_id).data.spans) == 3 for t in traces)


def test_batched_export_keeps_traces_in_memory_stores_them_and_restores_mlflows_exporter(
    docs_index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracing.provider import _get_span_processor

    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.tracing.reset()
    try:
        agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2}))
        agent.predict(REQUEST)  # MLflow's own exporter sets up its provider
        stock = _get_span_processor().span_exporter
        with batched_export(capture=True) as exporter:
            assert exporter is not None and _get_span_processor().span_exporter is exporter
            for _ in range(3):
                agent.predict(REQUEST)
            assert exporter.captured is not None and len(exporter.captured) == 3
            kept = list(exporter.captured.values())
        assert _get_span_processor().span_exporter is stock
        assert all(len(t.data.spans) == 3 for t in kept)  # complete in memory, no read-back needed
        for trace in kept:  # and stored by the time the block ends
            assert len(mlflow.get_trace(trace.info.trace_id).data.spans) == 3
    finally:
        mlflow.set_tracking_uri(original)
        mlflow.tracing.reset()


def test_not_installed_for_a_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://127.0.0.1:5000")
    assert install_batch_export() is None


def _item(n: int) -> PendingTrace:
    return PendingTrace(trace=n, prompts=(), workspace=None)  # type: ignore[arg-type]  # opaque here


def test_queue_writes_what_piled_up_as_one_batch() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def write(items: list[PendingTrace]) -> None:
        release.wait(5)
        batches.append([item.trace for item in items])  # type: ignore[misc]

    queue = TraceBatchQueue(write, max_batch=100)
    for n in range(6):
        queue.put(_item(n))
    release.set()
    queue.flush()
    assert [n for batch in batches for n in batch] == list(range(6))
    assert len(batches) <= 2  # the first trace alone, then the five that waited for it


def test_full_queue_makes_callers_wait_instead_of_dropping() -> None:
    written: list[int] = []
    gate = threading.Semaphore(0)

    def write(items: list[PendingTrace]) -> None:
        gate.acquire(timeout=5)
        written.extend(item.trace for item in items)  # type: ignore[misc]

    queue = TraceBatchQueue(write, max_batch=1, max_pending=2)
    producer = threading.Thread(target=lambda: [queue.put(_item(n)) for n in range(10)])
    producer.start()
    producer.join(0.3)
    assert producer.is_alive()  # blocked on the full queue, not discarding
    for _ in range(10):
        gate.release()
    producer.join(5)
    queue.flush(terminate=True)
    assert written == list(range(10))


def test_failed_batch_does_not_stop_the_writer(caplog: pytest.LogCaptureFixture) -> None:
    written: list[int] = []

    def write(items: list[PendingTrace]) -> None:
        if items[0].trace == 0:
            raise RuntimeError("database is locked")
        written.extend(item.trace for item in items)  # type: ignore[misc]

    queue = TraceBatchQueue(write)
    queue.put(_item(0))
    queue.flush()
    queue.put(_item(1))
    queue.flush()
    assert written == [1]
    assert "Could not store 1 traces" in caplog.text
