"""Trace export under faults: a store that turns read-only, a writer that dies, a store down at start."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import LiveSpan, Span, Trace
from mlflow.utils.mlflow_tags import MLFLOW_ARTIFACT_LOCATION

from ragworks.agents import build_agent
from ragworks.config import AgentConfig
from ragworks.trace_export import _mlflow_hooks
from ragworks.trace_export.batch import BatchTraceExporter
from ragworks.trace_export.writer_process import WriterProcess

REQUEST = {"input": [{"role": "user", "content": "How are logged agents loaded back?"}]}
CLI = [sys.executable, "-c", "from ragworks.cli import main; main()"]
N_PENDING = 50
"""Traces held back by a read-only store in the backlog test."""
N_REQUESTS = 500
"""Traced requests after the warm-up in the no-objects-left-behind test."""


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` and its files unwritable, even for root (immutable), until the block ends."""
    paths = [*folder.iterdir(), folder]
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in paths}
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a folder read-only")
    if subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode:
        pytest.skip("this file system has no immutable flag")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def _wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, BatchTraceExporter]]:
    """A SQLite store in its own folder, with batch export (writer process, quick retries) on it."""
    folder = tmp_path / "store"
    folder.mkdir()
    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    uri = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.tracing.reset()
    processor = _mlflow_hooks.current_processor()
    assert processor is not None
    exporter = BatchTraceExporter(uri, max_attempts=3, backoff=(0.05, 0.2), flush_timeout=2)
    restore = _mlflow_hooks.swap_exporter(processor, exporter.exporter)
    yield folder, exporter
    exporter.close()
    restore()
    mlflow.set_tracking_uri(original)
    mlflow.tracing.reset()


def test_store_turning_read_only_while_serving_keeps_answering_and_counts_drops(
    store: tuple[Path, BatchTraceExporter], docs_index: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder, exporter = store
    agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2}))
    for _ in range(3):
        agent.predict(REQUEST)
    mlflow.flush_trace_async_logging()
    assert exporter.stats().stored == 3 and exporter.writer is not None
    caplog.set_level(logging.WARNING, logger="ragworks.trace_export")
    with read_only(folder):
        answers = [agent.predict(REQUEST) for _ in range(20)]  # every request is still answered
        assert all(answer.output for answer in answers)
        _wait_for(lambda: exporter.stats().dropped == 20)
        stats = exporter.stats()
        assert stats.stored == 3  # nothing of the read-only time is reported stored
        assert stats.failed_batches >= 3 and stats.retried >= 2 and stats.pending == 0
        assert stats.last_error is not None
    drops = [r for r in caplog.records if "Dropped" in r.getMessage()]
    assert len(drops) == 1  # one warning line, not one per trace
    agent.predict(REQUEST)  # writable again: a new writer stores the next trace
    mlflow.flush_trace_async_logging()
    assert exporter.stats().stored == 4
    assert len(mlflow.search_traces(return_type="list", max_results=50)) == 4


def _traces(n: int, docs_index: str) -> list[Trace]:
    agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2}))
    for _ in range(n):
        agent.predict(REQUEST)
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(return_type="list", max_results=n)
    for trace in traces:  # as the server hands them over: not yet given a place by a store
        trace.info.tags.pop(MLFLOW_ARTIFACT_LOCATION)
    return traces


def test_writer_process_reports_a_batch_it_could_not_store(
    store: tuple[Path, BatchTraceExporter], docs_index: str, tmp_path: Path
) -> None:
    traces = _traces(2, docs_index)
    other = tmp_path / "other"
    other.mkdir()
    writer = WriterProcess(f"sqlite:///{other}/mlflow.db")
    try:
        assert sorted(writer.store(traces[:1]).stored) == [traces[0].info.trace_id]  # opens it
        with read_only(other):
            report = writer.store(traces[1:])
    except OSError as exc:  # the writer died on the read-only store: also not "stored"
        assert "died" in str(exc)
    else:
        assert report.stored == () and set(report.failed) == {traces[1].info.trace_id}
    finally:
        writer.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("postgresql://ragworks@127.0.0.1:{port}/mlflow", "unreachable (connection refused at 127.0.0.1"),
        ("sqlite:///{tmp}/a-file/mlflow.db", "a-file is a file, not a folder"),
        ("sqlite:////proc/ragworks-store/mlflow.db", "cannot be written"),
    ],
)
def test_serve_with_an_unusable_store_exits_at_once_with_one_line(
    uri: str, says: str, tmp_path: Path, docs_index: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    config = tmp_path / "agent.yaml"
    AgentConfig.load({"retriever": {"index": docs_index}}).to_yaml(config)
    port = _closed_port()
    uri, says = uri.format(port=port, tmp=tmp_path), says.format(port=port)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACE_SAMPLING_RATIO": "1"}
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, "serve", "--config", str(config), "--port", str(_closed_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], proc.stderr[-2000:]
    assert "MLFLOW_TRACKING_URI" in errors[0]
    assert elapsed < 60  # imports included; MLflow's own retries took minutes


def _live(*kinds: type) -> int:
    """How many objects of these types are alive now."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kinds))


def test_traces_waiting_for_a_failing_store_are_held_encoded_not_as_mlflow_objects(
    store: tuple[Path, BatchTraceExporter], docs_index: str
) -> None:
    """A backlog (a store that fails, or a writer that falls behind under load) costs a few KiB a trace,
    not the tens of KiB of MLflow spans each; once the store takes writes again every trace lands."""
    folder, _ = store
    processor = mlflow.tracing.provider._get_span_processor()  # the one the fixture swapped under
    patient = BatchTraceExporter(mlflow.get_tracking_uri(), max_attempts=1_000, backoff=(0.05, 0.2))
    restore = _mlflow_hooks.swap_exporter(processor, patient.exporter)
    try:
        agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2}))
        agent.predict(REQUEST)  # warm-up: imports, caches, the writer process
        mlflow.flush_trace_async_logging()
        before = _live(Trace, Span, LiveSpan)
        with read_only(folder):
            for _ in range(N_PENDING):
                agent.predict(REQUEST)
            stats = patient.stats()
            assert stats.pending == N_PENDING and stats.stored == 1 and stats.dropped == 0
            assert _live(Trace, Span, LiveSpan) - before < 10  # not 3 spans and a trace per pending one
            assert 0 < stats.pending_bytes < N_PENDING * 16 * 1024
        mlflow.flush_trace_async_logging()
        stats = patient.stats()
        assert (stats.stored, stats.pending, stats.pending_bytes) == (1 + N_PENDING, 0, 0)
    finally:
        restore()
        patient.close()
    stored = mlflow.search_traces(return_type="list", max_results=2 * N_PENDING)
    assert len(stored) == 1 + N_PENDING and all(len(t.data.spans) == 3 for t in stored)


@pytest.mark.slow  # 500 traced requests: about 10 s
def test_traced_requests_leave_no_trace_or_span_objects_behind(
    store: tuple[Path, BatchTraceExporter], docs_index: str
) -> None:
    """After a warm-up, many traced requests: once their traces are stored, nothing of them stays alive."""
    _, exporter = store
    agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2}))
    for _ in range(20):
        agent.predict(REQUEST)
        list(agent.predict_stream(REQUEST))
    mlflow.flush_trace_async_logging()
    before = _live(Trace, Span, LiveSpan)
    for _ in range(N_REQUESTS // 2):
        agent.predict(REQUEST)
        list(agent.predict_stream(REQUEST))
    mlflow.flush_trace_async_logging()
    assert exporter.stats().stored == 40 + N_REQUESTS
    assert _live(Trace, Span, LiveSpan) - before < 10
