"""Batched trace export (servers and eval runs): every trace lands, complete, in a temp SQLite store."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
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
from ragworks.trace_export import _mlflow_hooks, _sql_session
from ragworks.trace_export._sql_session import one_transaction
from ragworks.trace_export.batch import BatchTraceExporter, batched_export, install_batch_export
from ragworks.trace_export.retry_queue import TraceQueue
from ragworks.trace_export.writer import open_client, store_traces

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
    installed.close()
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
    assert exporter.writer is not None and exporter.writer.pid is not None  # by the writer process
    stats = exporter.stats()
    assert (stats.stored, stats.retried, stats.dropped, stats.pending) == (40, 0, 0, 0)


def test_traces_still_land_when_the_writer_process_dies(
    exporter: BatchTraceExporter, docs_index: str
) -> None:
    build_agent(AgentConfig(retriever={"type": "local", "index": docs_index})).predict(REQUEST)
    mlflow.flush_trace_async_logging()  # the first batch starts the writer process
    assert exporter.writer is not None and exporter.writer.pid is not None
    os.kill(exporter.writer.pid, signal.SIGKILL)
    time.sleep(0.2)
    agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index}))
    for _ in range(3):
        agent.predict(REQUEST)
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(return_type="list")
    assert len(traces) == 4 and all(len(t.data.spans) == 3 for t in traces)
    assert exporter.writer.restarts == 1  # a new writer process took over
    assert exporter.stats().stored == 4


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
    client = open_client(f"sqlite:///{path}")
    commits: list[int] = []
    sqlalchemy.event.listen(client.store.engine, "commit", lambda _conn: commits.append(1))
    return client, commits


def test_writer_stores_a_batch_in_one_transaction(
    exporter: BatchTraceExporter, docs_index: str, tmp_path: Path
) -> None:
    traces = _stored_traces(exporter, docs_index, 5)
    client, commits = _fresh_store(tmp_path / "copy.db")
    report = store_traces(client, traces)
    assert len(commits) == 1
    assert sorted(report.stored) == sorted(t.info.trace_id for t in traces) and not report.failed
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
    report = store_traces(client, traces)  # the first is there: MLflow's merge must not lose the rest
    assert len(commits) > 2 and len(report.stored) == 4 and not report.failed
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
            assert exporter is not None and _get_span_processor().span_exporter is exporter.exporter
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


def test_queue_writes_what_piled_up_as_one_batch() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def write(items: Sequence[int]) -> dict[int, str]:
        release.wait(5)
        batches.append(list(items))
        return {}

    queue: TraceQueue[int] = TraceQueue(write, max_batch=100)
    for n in range(6):
        queue.put(n)
    release.set()
    queue.flush()
    assert [n for batch in batches for n in batch] == list(range(6))
    assert len(batches) <= 2  # the first trace alone, then the five that waited for it
    assert queue.stats().stored == 6


def test_full_queue_makes_callers_wait_while_the_store_keeps_up() -> None:
    written: list[int] = []
    gate = threading.Semaphore(0)

    def write(items: Sequence[int]) -> dict[int, str]:
        gate.acquire(timeout=5)
        written.extend(items)
        return {}

    queue: TraceQueue[int] = TraceQueue(write, max_batch=1, max_pending=2, put_timeout=10)
    producer = threading.Thread(target=lambda: [queue.put(n) for n in range(10)])
    producer.start()
    producer.join(0.3)
    assert producer.is_alive()  # blocked on the full queue, not discarding
    for _ in range(10):
        gate.release()
    producer.join(5)
    queue.flush(terminate=True)
    assert written == list(range(10)) and queue.stats().dropped == 0


def test_failed_traces_are_retried_with_backoff_then_stored() -> None:
    attempts: list[float] = []
    written: list[int] = []
    failed: list[int] = []  # traces per failed batch: the first may hold one trace or both

    def write(items: Sequence[int]) -> dict[int, str]:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            failed.append(len(items))
            return dict.fromkeys(range(len(items)), "OperationalError: attempt to write a readonly database")
        written.extend(items)
        return {}

    queue: TraceQueue[int] = TraceQueue(write, backoff=(0.05, 1.0))
    queue.put(1)
    queue.put(2)
    deadline = time.monotonic() + 5
    while not written and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = queue.stats()
    assert written == [1, 2]
    assert attempts[2] - attempts[1] >= attempts[1] - attempts[0] >= 0.04  # waits grow
    assert (stats.stored, stats.retried, stats.dropped, stats.failed_batches) == (2, sum(failed), 0, 2)
    assert stats.last_error is not None and "readonly" in stats.last_error


def test_a_store_that_stays_down_costs_bounded_memory_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def write(items: Sequence[int]) -> dict[int, str]:
        return dict.fromkeys(range(len(items)), "OperationalError: unable to open database file")

    queue: TraceQueue[int] = TraceQueue(
        write, max_pending=10, max_attempts=2, backoff=(0.01, 0.02), warn_interval=60
    )
    started = time.monotonic()
    for n in range(200):
        queue.put(n)  # never waits on a failing store
    assert time.monotonic() - started < 2
    queue.flush(terminate=True)
    stats = queue.stats()
    assert stats.stored == 0 and stats.pending == 0
    assert stats.dropped == 200  # every trace counted: none silently lost, none reported stored
    warnings = [r for r in caplog.records if r.name == "ragworks.trace_export" and "Dropped" in r.message]
    assert 1 <= len(warnings) <= 2  # the first drop, and the rest summed up at exit
    assert "200 in all" in warnings[-1].getMessage()


def test_the_hooks_into_mlflow_are_all_found_on_this_mlflow(exporter: BatchTraceExporter) -> None:
    """On a supported MLflow the private hooks engage, never the stock fallback."""
    assert _mlflow_hooks.MISSING == ()
    assert not _mlflow_hooks._fallback_logged.is_set()
    assert _sql_session.supports(exporter.exporter.client.store)
    assert not _sql_session._fallback_logged.is_set()
    from mlflow.tracing.provider import _get_span_processor

    assert _get_span_processor().span_exporter is exporter.exporter


def test_stats_stop_when_mlflow_resets_its_tracing(
    exporter: BatchTraceExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """`mlflow.set_experiment` replaces MLflow's tracing: the stats say the exporter is gone, once."""
    from ragworks.trace_export.batch import trace_export_stats

    assert trace_export_stats() is not None
    mlflow.set_experiment("after-the-reset")
    with mlflow.start_span("after"):
        pass  # MLflow sets up its tracing anew, with its own exporter
    with caplog.at_level(logging.WARNING, logger="ragworks.trace_export"):
        assert trace_export_stats() is None
        assert trace_export_stats() is None
    resets = [r for r in caplog.records if "tracing was reset" in r.getMessage()]
    assert len(resets) == 1
