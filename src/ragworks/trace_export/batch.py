"""Batched trace export: many traces per store write, off the server's GIL, failures counted.

MLflow's exporter writes each trace to the tracking store from a bounded queue: one `log_spans`
transaction per handful of ended spans plus one `start_trace` per trace, from up to ten threads that
contend for SQLite's single writer lock, all on the server's own GIL; under sustained load its queue
(`MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE`) fills and traces are discarded with no count.

Here MLflow still assembles every trace; a finished trace is only queued (`retry_queue`), encoded
for the writer at once (`EncodedTrace`: a few KiB instead of tens of KiB of MLflow objects, so a
backlog under sustained load stays small, and is bounded in bytes as well as in traces), and one
thread sends what piled up to the writer process (`writer_process`), which stores the batch in one
transaction and reports, trace by trace, what it committed. Failed traces are retried with backoff
and dropped with a counted warning when the store stays down (`trace_export_stats()`). Traces with
prompt links, attachments or a workspace go through MLflow's own `_log_trace`, in this process.
`mlflow.flush_trace_async_logging()` and `mlflow.get_trace(..., flush=True)` drain the queue.

Only database tracking stores (`sqlite:`, `postgresql:`, ...) get it, and only on MLflow releases
whose internals `_mlflow_hooks` finds; elsewhere MLflow's own exporter (with its public settings,
e.g. `MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE`) stores traces. Servers call
`setup_server_tracing()` at startup; with `--workers N`, `prepare_tracking_store()` first creates a
new database once, since N workers would race to migrate it.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities import Trace
from mlflow.entities.model_registry import PromptVersion
from mlflow.tracing.constant import SpansLocation, TraceTagKey
from mlflow.tracing.utils import maybe_get_request_id
from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

from ragworks.trace_export import _mlflow_hooks
from ragworks.trace_export.experiment import use_experiment
from ragworks.trace_export.retry_queue import ExportStats, TraceQueue
from ragworks.trace_export.store_check import DATABASE_SCHEMES, check_tracking_store, scheme
from ragworks.trace_export.writer import StoreReport, store_traces
from ragworks.trace_export.writer_process import EncodedTrace, WriterDied, WriterProcess

logger = logging.getLogger(__name__)

MAX_BATCH = 128
"""Traces per store write; a batch is whatever piled up while the previous one was written."""
MAX_PENDING = 5_000
"""Traces held in memory; beyond it callers wait while the store keeps up, else the oldest is dropped."""
MAX_PENDING_BYTES = 16 * 1024 * 1024
"""Bytes of traces held in memory (encoded, or `LIVE_TRACE_BYTES` each when not); beyond it, as above."""
LIVE_TRACE_BYTES = 32 * 1024
"""What one trace kept as MLflow objects is counted as (about 28 KiB measured for three spans)."""
WARN_INTERVAL = 60.0
"""Seconds between two warnings about the same kind of export failure."""
_installed: list[BatchTraceExporter] = []


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTrace:
    """A finished trace waiting for the writer: encoded for it, or as MLflow's objects (`_is_plain`)."""

    trace: Trace | EncodedTrace
    prompts: Sequence[PromptVersion]
    workspace: str | None

    @property
    def trace_id(self) -> str:
        """The trace's id."""
        trace = self.trace
        return trace.trace_id if isinstance(trace, EncodedTrace) else trace.info.trace_id

    def size(self) -> int:
        """Bytes this trace holds while it waits, for the queue's budget."""
        return len(self.trace.data) if isinstance(self.trace, EncodedTrace) else LIVE_TRACE_BYTES


class BatchTraceExporter:
    """MLflow's exporter with its storing replaced: finished traces are queued and written in batches."""

    def __init__(
        self, tracking_uri: str, *, child: bool = True, capture: bool = False, **queue_options: Any
    ) -> None:
        """`child`: store in a writer process (servers), else here; `queue_options` go to `TraceQueue`."""
        self.captured: dict[str, Trace] | None = {} if capture else None
        """With `capture`, every finished trace by id, as it was queued (complete, with its spans)."""
        options = {
            "max_batch": MAX_BATCH,
            "max_pending": MAX_PENDING,
            "max_pending_bytes": MAX_PENDING_BYTES,
            "warn_interval": WARN_INTERVAL,
            "size": PendingTrace.size,
        }
        self.queue: TraceQueue[PendingTrace] = TraceQueue(self._write, **{**options, **queue_options})
        self.exporter = _mlflow_hooks.HookedExporter(tracking_uri, sink=self._accept, queue=self.queue)
        """What MLflow's span processor exports to."""
        self.writer = WriterProcess(tracking_uri) if child else None
        """The writer process (None: batches are stored in this process)."""
        self._writer_warned = -WARN_INTERVAL

    def stats(self) -> ExportStats:
        """What was stored, retried and dropped so far."""
        return self.queue.stats()

    def _accept(self, trace: Trace, prompts: Sequence[PromptVersion], workspace: str | None) -> None:
        item = PendingTrace(trace=trace, prompts=prompts, workspace=workspace)
        if self.writer is not None and _is_plain(item):
            # Only the encoding travels to the writer process: keep that, not the trace's objects.
            item = PendingTrace(trace=EncodedTrace.of(trace), prompts=prompts, workspace=workspace)
        if self.captured is not None:
            self.captured[trace.info.trace_id] = trace
        if maybe_get_request_id(is_evaluate=True):  # mlflow.genai.evaluate reads traces at once
            failed = self._write([item])
            if failed:
                logger.warning("Could not store the trace %s: %s", trace.info.trace_id, failed[0])
        else:
            self.queue.put(item)

    def _write(self, items: Sequence[PendingTrace]) -> dict[int, str]:
        """Store a batch; return {index: error} for each trace that was not stored."""
        plain = [i for i, item in enumerate(items) if _is_plain(item)]
        failed: dict[int, str] = {}
        if plain:
            report = self._store_plain([items[i].trace for i in plain])
            failed.update(_failures(report, [items[i] for i in plain], plain))
        for i, item in enumerate(items):
            if i not in plain:
                error = self._store_special(item)
                if error is not None:
                    failed[i] = error
        return failed

    def _store_plain(self, traces: list[Trace | EncodedTrace]) -> StoreReport:
        if self.writer is None:  # then nothing was encoded (see `_accept`)
            return store_traces(self.exporter.client, [t for t in traces if isinstance(t, Trace)])
        try:  # never in this process: a store gone read-only crashes the process writing to it
            return self.writer.store(traces)
        except WriterDied as exc:
            now = time.monotonic()
            if now - self._writer_warned >= WARN_INTERVAL:  # one line per interval, not per batch
                self._writer_warned = now
                logger.warning("%s; its traces are retried by a new writer process.", exc)
            raise

    def _store_special(self, item: PendingTrace) -> str | None:
        """Prompt links, a workspace or attachments: MLflow's own path (which logs its own failures)."""
        assert isinstance(item.trace, Trace)  # only plain traces are encoded
        item.trace.info.tags[TraceTagKey.SPANS_LOCATION] = SpansLocation.TRACKING_STORE.value
        self.exporter.store_with_mlflow(item.trace, item.prompts, item.workspace)
        experiment_id = item.trace.info.experiment_id or DEFAULT_EXPERIMENT_ID
        with _mlflow_hooks.workspace_context(item.workspace) if item.workspace else nullcontext():
            try:
                self.exporter.client.log_spans(experiment_id, list(item.trace.data.spans))
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
        return None

    def close(self) -> None:
        """Store what is queued (bounded while the store fails), then stop the thread and process."""
        self.queue.flush(terminate=True)
        if self.writer is not None:
            self.writer.close()


def _failures(report: StoreReport, items: Sequence[PendingTrace], indexes: list[int]) -> dict[int, str]:
    """Indexes of the traces a report does not name as stored, with their error."""
    stored = set(report.stored)
    return {
        index: report.failed.get(item.trace_id, "not reported as stored")
        for index, item in zip(indexes, items, strict=True)
        if item.trace_id not in stored
    }


def _is_plain(item: PendingTrace) -> bool:
    """No prompt links, workspace or attachments: the batch writer can store it."""
    if item.prompts or item.workspace:
        return False
    if isinstance(item.trace, EncodedTrace):
        return True
    return not any(getattr(span, "_attachments", None) for span in item.trace.data.spans)


def install_batch_export() -> BatchTraceExporter | None:
    """Put a `BatchTraceExporter` under MLflow's tracing, when traces go to a database store.

    Returns the exporter, or None when it was not installed (tracing disabled, a non-database
    tracking URI such as Databricks or an HTTP server, or an MLflow whose internals differ).
    """
    uri = mlflow.get_tracking_uri()
    if scheme(uri) not in DATABASE_SCHEMES:
        return None
    processor = _mlflow_hooks.current_processor()
    if processor is None:
        return None
    in_memory = uri.startswith("sqlite") and uri.rstrip("/") in ("sqlite:", "sqlite:///:memory:")
    exporter = BatchTraceExporter(uri, child=not in_memory)  # a child cannot see an in-memory DB
    _mlflow_hooks.swap_exporter(processor, exporter.exporter)
    atexit.register(exporter.close)
    _installed[:] = [exporter]
    logger.info("Traces are stored in batches by a writer process (%s).", uri)
    return exporter


def trace_export_stats() -> ExportStats | None:
    """Counters of this process's batched trace export (None when it is not, or no longer, installed).

    MLflow drops our exporter when its tracing is reset (`mlflow.set_experiment` does that): the
    traces already queued are still stored, new ones go MLflow's own way, and this says so once.
    """
    if not _installed:
        return None
    exporter = _installed[0]
    if not _mlflow_hooks.exports_to(exporter.exporter):
        _installed.clear()
        logger.warning(
            "MLflow's tracing was reset (mlflow.set_experiment does that): new traces are stored "
            "by MLflow's own exporter; call install_batch_export() again to batch them."
        )
        return None
    return exporter.stats()


@contextmanager
def batched_export(*, capture: bool = False) -> Iterator[BatchTraceExporter | None]:
    """Within the block, traces are stored in batches on a background thread; MLflow's exporter after.

    Yields the exporter (its `captured` traces with `capture`), or None where it does not apply
    (see `install_batch_export`); on exit every trace of the block is stored (or counted dropped).
    """
    processor = None
    if scheme(mlflow.get_tracking_uri()) in DATABASE_SCHEMES:
        processor = _mlflow_hooks.current_processor()
    if processor is None:
        yield None
        return
    exporter = BatchTraceExporter(mlflow.get_tracking_uri(), child=False, capture=capture)
    restore = _mlflow_hooks.swap_exporter(processor, exporter.exporter)
    try:
        yield exporter
    finally:
        exporter.queue.flush()
        restore()
        exporter.close()


def setup_server_tracing(*, experiment: str | None = None) -> BatchTraceExporter | None:
    """A server process's tracing: the store checked, the experiment pinned, batch export, the writer.

    Raises `ConfigError` (one line, in seconds) when the tracking store cannot be reached or written.
    `experiment` (created when missing) receives the traces; else MLflow's active experiment does.
    MLflow resolves the experiment of every new trace anew (about 0.4 ms each); a server's
    experiment cannot change, so it is pinned here. The writer process starts now, so its imports
    (seconds of CPU) do not land on the first requests.
    """
    from mlflow.environment_variables import MLFLOW_TRACE_SAMPLING_RATIO

    traced = MLFLOW_TRACE_SAMPLING_RATIO.get() != 0
    if not traced and experiment is None:
        return None  # nothing will be traced
    check_tracking_store(mlflow.get_tracking_uri())
    if experiment is not None:
        use_experiment(experiment)
    if not traced:
        return None
    experiment_id = _mlflow_hooks.current_experiment_id()
    if experiment_id:
        mlflow.set_experiment(experiment_id=experiment_id)
    exporter = install_batch_export()
    if exporter is not None and exporter.writer is not None:
        exporter.writer.start()
        # Only the writer writes to the store. This process's own pooled connections (opened to
        # resolve the experiment) are closed, so none keeps a SQLite WAL file mapped in memory.
        engine = getattr(exporter.exporter.client.store, "engine", None)
        if engine is not None:
            engine.dispose()
    return exporter


def prepare_tracking_store(*, experiment: str | None = None) -> None:
    """Check the tracking store and create (or migrate) a new database now, before workers start.

    `experiment` is created now too, once, rather than by every worker at the same moment.
    Raises `ConfigError` when it cannot be reached or written (see `check_tracking_store`).
    """
    from mlflow.environment_variables import MLFLOW_TRACE_SAMPLING_RATIO

    uri = mlflow.get_tracking_uri()
    if scheme(uri) not in DATABASE_SCHEMES or MLFLOW_TRACE_SAMPLING_RATIO.get() == 0:
        return
    check_tracking_store(uri)
    mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates or migrates
    if experiment is not None:
        use_experiment(experiment)
