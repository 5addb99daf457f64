"""Batched trace export for the server: many traces per store write, off the server's GIL, none dropped.

MLflow's exporter writes each trace to the tracking store from a bounded queue: one `log_spans`
transaction per handful of ended spans plus one `start_trace` per trace, from up to ten threads that
contend for SQLite's single writer lock (and for the trace row, so `start_trace` often takes its slow
merge path), all on the server's own GIL. Under sustained load its queue (1,000 tasks) fills and
traces are discarded.

`install_batch_export` swaps the exporter of MLflow's span processor for `BatchTraceExporter`. It keeps
MLflow's trace assembly, but a finished trace is only queued. One thread sends whatever has piled up,
as JSON, to a writer process (`ragworks.trace_export.writer`), which stores the batch on its own interpreter:
`start_trace` per trace, then the spans of the whole batch in one `log_spans` call (one transaction).
When the writer falls behind, requests wait for room instead of losing traces. Traces with prompt
links or attachments, and any batch the process cannot take, are stored in-process by MLflow's own
`_log_trace`. `mlflow.flush_trace_async_logging()` and `mlflow.get_trace(..., flush=True)` drain it.

Only database tracking stores (`sqlite:`, `postgresql:`, ...) get it; others keep MLflow's exporter.
For SQLite the writer process turns on WAL with `synchronous=NORMAL`, so a commit does not wait for
an fsync. With `--workers N`, `prepare_tracking_store` creates a new database once, before the
workers start: each worker sets up tracing at startup, and N of them would race to migrate it.
"""

from __future__ import annotations

import atexit
import json
import logging
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Span, Trace
from mlflow.entities.model_registry import PromptVersion
from mlflow.tracing.constant import SpansLocation, TraceTagKey
from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter
from mlflow.tracing.utils import maybe_get_request_id
from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID
from mlflow.utils.workspace_context import ServerWorkspaceContext
from opentelemetry.sdk.trace import ReadableSpan

logger = logging.getLogger(__name__)

MAX_BATCH = 128
"""Traces per store write; a batch is whatever piled up while the previous one was written."""
MAX_PENDING = 5_000
"""Traces held in memory before requests wait for the writer (backpressure, never a drop)."""
DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The folder holding this `ragworks`, so the writer process runs the same code as the server."""
_WRITER_MAIN = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from ragworks.trace_export.writer import main; main(sys.argv[1:])"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTrace:
    """A finished trace waiting for the writer."""

    trace: Trace
    prompts: Sequence[PromptVersion]
    workspace: str | None


class TraceBatchQueue:
    """A bounded FIFO drained by one daemon thread that hands `write` everything pending at once."""

    def __init__(
        self,
        write: Callable[[list[PendingTrace]], None],
        *,
        max_batch: int = MAX_BATCH,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._items: list[PendingTrace] = []
        self._in_flight = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._warned_full = False

    def put(self, item: PendingTrace) -> None:
        """Queue a trace; blocks while `max_pending` traces wait, so none is ever discarded."""
        with self._cond:
            if self._stopping:  # shutting down: write it here rather than lose it
                self._write([item])
                return
            while len(self._items) >= self._max_pending:
                if not self._warned_full:
                    self._warned_full = True
                    logger.warning(
                        "%d traces are waiting to be stored; requests now wait for the trace writer. "
                        "Lower MLFLOW_TRACE_SAMPLING_RATIO or use a faster tracking store.",
                        len(self._items),
                    )
                self._cond.wait()
            self._items.append(item)
            self._ensure_thread()
            self._cond.notify_all()

    def flush(self, terminate: bool = False) -> None:
        """Wait until every queued trace is stored; with `terminate`, stop the writer thread too."""
        with self._cond:
            if terminate:
                self._stopping = True
                self._cond.notify_all()
            if self._thread is None or not self._thread.is_alive():
                items, self._items = self._items, []
            else:
                self._cond.wait_for(lambda: not self._items and not self._in_flight)
                items = []
        if items:  # no writer thread (never started, or gone): write here
            self._write(items)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="ragworks-trace-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._stopping)
                if not self._items:
                    return
                batch, self._items = self._items[: self._max_batch], self._items[self._max_batch :]
                self._in_flight = len(batch)
                self._cond.notify_all()  # room for requests waiting in put()
            try:
                self._write(batch)
            except Exception:  # the writer must survive a failed batch
                logger.exception("Could not store %d traces.", len(batch))
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()


class WriterProcess:
    """The writer child process: stores trace batches on its own interpreter (its own GIL)."""

    def __init__(self, tracking_uri: str) -> None:
        self._uri = tracking_uri
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> subprocess.Popen[str]:
        """Start the process unless it runs: at server startup, or else on the first batch."""
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WRITER_MAIN, _PACKAGE_ROOT, self._uri],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        return self._proc

    def store(self, traces: Sequence[Trace]) -> None:
        """Send a batch and wait until it is stored; OSError when the process is gone."""
        with self._lock:
            proc = self.start()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps([t.to_dict() for t in traces]) + "\n")
            proc.stdin.flush()
            if proc.stdout.readline() != "ok\n":
                raise OSError(f"the trace writer process exited ({proc.poll()})")

    def close(self) -> None:
        """End of input: the process finishes its batch and exits."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


class BatchTraceExporter(MlflowV3SpanExporter):
    """MLflow's V3 exporter, storing finished traces in batches off the request path (module doc)."""

    def __init__(
        self, tracking_uri: str, *, max_batch: int = MAX_BATCH, child: bool = True, capture: bool = False
    ) -> None:
        super().__init__(tracking_uri)
        self.captured: dict[str, Trace] | None = {} if capture else None
        """With `capture`, every finished trace by id, as it was queued (complete, with its spans)."""
        self._is_async_enabled = False  # MLflow's task queue is bypassed: `_log_trace` queues here
        self.queue = TraceBatchQueue(self.write_batch, max_batch=max_batch)
        # What mlflow.flush_trace_async_logging() drains: it only calls `flush(terminate=...)`.
        self._async_queue = self.queue  # type: ignore[assignment]
        self._writer = WriterProcess(tracking_uri) if child else None

    def _export_spans_incrementally(self, spans: Sequence[ReadableSpan]) -> None:
        """Spans are stored with their finished trace, in the batch's single `log_spans` call."""

    def _log_trace(
        self, trace: Trace, prompts: Sequence[PromptVersion], workspace: str | None = None
    ) -> None:
        item = PendingTrace(trace=trace, prompts=prompts, workspace=workspace)
        if self.captured is not None:
            self.captured[trace.info.trace_id] = trace
        if maybe_get_request_id(is_evaluate=True):  # mlflow.genai.evaluate reads traces at once
            self.write_batch([item])
        else:
            self.queue.put(item)

    def write_batch(self, items: list[PendingTrace]) -> None:
        """Store a batch: in the writer process, or here for what it cannot take (or if it is gone)."""
        from ragworks.trace_export.writer import store_traces

        plain = [i for i in items if _is_plain(i)]
        special = [i for i in items if not _is_plain(i)]
        if plain and self._writer is not None:
            try:
                self._writer.store([i.trace for i in plain])
                plain = []
            except (OSError, ValueError) as exc:
                logger.warning("The trace writer process failed (%s); storing traces in-process.", exc)
                self._writer = None
        if plain:  # one transaction, as the writer process does
            store_traces(self._client, [i.trace for i in plain])
        self._store_special(special)

    def _store_special(self, items: list[PendingTrace]) -> None:
        """Traces with prompt links, a workspace or attachments: through MLflow's own path."""
        spans: defaultdict[tuple[str | None, str | None], list[Span]] = defaultdict(list)
        for item in items:
            item.trace.info.tags[TraceTagKey.SPANS_LOCATION] = SpansLocation.TRACKING_STORE.value
            super()._log_trace(item.trace, item.prompts, item.workspace)  # tags, attachments, prompts
            spans[(item.trace.info.experiment_id, item.workspace)].extend(item.trace.data.spans)
        for (experiment_id, workspace), group in spans.items():
            with ServerWorkspaceContext(workspace) if workspace else nullcontext():
                try:
                    self._client.log_spans(experiment_id or DEFAULT_EXPERIMENT_ID, group)
                except Exception as exc:
                    logger.warning("Could not store the spans of %d traces: %s", len(items), exc)

    def close(self) -> None:
        """Store what is queued, then stop the writer thread and process."""
        self.queue.flush(terminate=True)
        if self._writer is not None:
            self._writer.close()


def _is_plain(item: PendingTrace) -> bool:
    """No prompt links, workspace or attachments: the batch writer can store it."""
    if item.prompts or item.workspace:
        return False
    return not any(getattr(span, "_attachments", None) for span in item.trace.data.spans)


def install_batch_export() -> BatchTraceExporter | None:
    """Put a `BatchTraceExporter` under MLflow's tracing, when traces go to a database store.

    Returns the exporter, or None when it was not installed (tracing disabled, a non-database
    tracking URI such as Databricks or an HTTP server, or a tracer provider MLflow does not own).
    """
    processor = _mlflow_processor()
    if processor is None:
        return None
    uri = mlflow.get_tracking_uri()
    in_memory = uri.startswith("sqlite") and uri.rstrip("/") in ("sqlite:", "sqlite:///:memory:")
    exporter = BatchTraceExporter(uri, child=not in_memory)  # a child cannot see an in-memory DB
    _swap_exporter(processor, exporter)
    atexit.register(exporter.close)
    logger.info("Traces are stored in batches by a writer process (%s).", uri)
    return exporter


@contextmanager
def batched_export(*, capture: bool = False) -> Iterator[BatchTraceExporter | None]:
    """Within the block, traces are stored in batches on a background thread; MLflow's exporter after.

    Yields the exporter (its `captured` traces with `capture`), or None where it does not apply
    (see `install_batch_export`); on exit every trace of the block is stored.
    """
    processor = _mlflow_processor()
    if processor is None:
        yield None
        return
    original, delegate = processor.span_exporter, processor._batch_delegate
    if delegate is not None:
        delegate.force_flush()  # spans MLflow's batch processor still holds go out the old way
    exporter = BatchTraceExporter(mlflow.get_tracking_uri(), child=False, capture=capture)
    processor.span_exporter, processor._batch_delegate = exporter, None
    try:
        yield exporter
    finally:
        exporter.queue.flush()
        processor.span_exporter, processor._batch_delegate = original, delegate
        exporter.close()


def setup_server_tracing() -> BatchTraceExporter | None:
    """A server process's tracing: the experiment resolved once, batch export, the writer started.

    MLflow resolves the experiment of every new trace anew (environment, Databricks notebook
    context, default), about 0.4 ms each; a server's experiment cannot change, so it is pinned here.
    The writer process starts now, so its imports (seconds of CPU) do not land on the first requests.
    """
    from mlflow.environment_variables import MLFLOW_TRACE_SAMPLING_RATIO
    from mlflow.tracking.fluent import _get_experiment_id

    if MLFLOW_TRACE_SAMPLING_RATIO.get() == 0:
        return None  # nothing will be traced
    experiment_id = _get_experiment_id()
    if experiment_id:
        mlflow.set_experiment(experiment_id=experiment_id)
    exporter = install_batch_export()
    if exporter is not None and exporter._writer is not None:
        exporter._writer.start()
    return exporter


def _mlflow_processor() -> Any:
    """MLflow's span processor, when it is the stock one exporting to a database store; else None.

    Any: MLflow's `MlflowV3SpanProcessor` (an internal, so an MLflow without it keeps its exporter).
    """
    try:
        from mlflow.tracing.processor.mlflow_v3 import MlflowV3SpanProcessor
        from mlflow.tracing.provider import _get_span_processor, _get_tracer
    except ImportError as exc:
        logger.warning("Traces are exported by MLflow's own exporter: %s", exc)
        return None
    if _scheme(mlflow.get_tracking_uri()) not in DATABASE_SCHEMES:
        return None
    _get_tracer(__name__)  # make MLflow set up its tracer provider now, not on the first span
    processor = _get_span_processor()
    if type(processor) is not MlflowV3SpanProcessor:
        return None
    if type(processor.span_exporter) is not MlflowV3SpanExporter:  # someone else's, or ours already
        return None
    return processor


def prepare_tracking_store() -> None:
    """Create (or migrate) a database tracking store now, in one process, before workers start."""
    uri = mlflow.get_tracking_uri()
    if _scheme(uri) not in DATABASE_SCHEMES:
        return
    from mlflow.tracking._tracking_service.utils import _get_store

    _get_store(uri)


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0]


def _swap_exporter(processor: Any, exporter: BatchTraceExporter) -> None:
    """Export each ended span inline (cheap: a finished trace is only queued) to `exporter`."""
    delegate = processor._batch_delegate  # MLflow's BatchSpanProcessor, which batches by span
    processor.span_exporter = exporter
    processor._batch_delegate = None
    if delegate is not None:
        delegate.shutdown()  # it is idle at startup: nothing was traced yet


def tune_sqlite(uri: str) -> None:
    """WAL journal and `synchronous=NORMAL` on the tracking store's SQLite connections."""
    if not uri.startswith("sqlite"):
        return
    from mlflow.tracking._tracking_service.utils import _get_store
    from sqlalchemy import event

    engine = getattr(_get_store(uri), "engine", None)
    if engine is None:
        return

    def on_connect(dbapi_connection: Any, _record: Any) -> None:  # Any: a DB-API connection
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections reopen with the pragmas
