"""Storing a batch of traces, and the trace-writer process that does it off the server's GIL.

    python -m ragworks.trace_export.writer <tracking-uri>

Protocol, one line each way: the server writes a JSON list of `Trace.to_dict()`s; the writer
stores them and answers one JSON object, `{"stored": [ids], "failed": {id: error}}` (or
`{"error": ...}` when the whole batch could not be read or the store not opened). A trace is
reported stored only once its info and spans are committed. The writer exits at end of input, i.e.
when the server closes the pipe or dies.

A batch goes in one transaction when the store allows it (`_sql_session.one_transaction`); if that
fails, each trace is stored on its own, so one bad trace or a merge with an existing row costs
only itself. SQLite stores get WAL with `synchronous=NORMAL`, so a commit does not wait for fsync.
WAL maps the store's `-shm` file into memory: if that file turns read-only, the next write is a
SIGBUS. Only this process ever writes to the store, so such a crash ends the writer, never the
server, which sees the pipe close and starts another writer later (`WriterProcess`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Trace
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import SpansLocation, TraceTagKey
from mlflow.tracing.utils import add_size_stats_to_trace_metadata
from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

from ragworks.trace_export import _sql_session
from ragworks.trace_export.store_check import check_tracking_store

logger = logging.getLogger("ragworks.trace_export.writer")
WRITER_NICENESS = 10
"""Scheduling priority the writer process lowers itself by (Unix `nice`)."""
LOCKED_RETRIES = 3
"""Retries of a batch that SQLite refused with "database is locked"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreReport:
    """What became of a batch: the ids committed, and an error for each trace that was not."""

    stored: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The protocol's reply line (without its newline)."""
        return json.dumps({"stored": list(self.stored), "failed": self.failed})


def _short(exc: BaseException) -> str:
    """An error in one short line: the first line of its message, with its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


def store_traces(client: TracingClient, traces: Sequence[Trace]) -> StoreReport:
    """Store a batch: in one transaction when possible, else trace by trace; report each trace."""
    for trace in traces:
        add_size_stats_to_trace_metadata(trace)
        # The spans go to the store's spans table (below), not to a trace-data artifact.
        trace.info.tags[TraceTagKey.SPANS_LOCATION] = SpansLocation.TRACKING_STORE.value
    if _sql_session.supports(client.store):
        error = _in_one_transaction(client, traces)
        if error is None:
            return StoreReport(stored=tuple(t.info.trace_id for t in traces))
        logger.debug("Storing %d traces one by one: %s", len(traces), error)
    return _one_by_one(client, traces)


def _in_one_transaction(client: TracingClient, traces: Sequence[Trace]) -> str | None:
    """None once the batch is committed; else why not (nothing of it was stored)."""
    error = ""
    for attempt in range(LOCKED_RETRIES + 1):
        try:
            with _sql_session.one_transaction(client.store):
                for trace in traces:
                    client.start_trace(trace.info)
                for experiment_id, spans in _spans_by_experiment(traces).items():
                    client.log_spans(experiment_id, spans)
            return None
        except Exception as exc:  # rolled back as a whole
            error = _short(exc)
            # SQLite refuses at once (no busy wait) a read transaction that turns into a write
            # while another connection writes: worth another go before the slower path.
            if "locked" not in error.lower() or attempt == LOCKED_RETRIES:
                break
            time.sleep(0.05 * (attempt + 1))
    return error


def _spans_by_experiment(traces: Sequence[Trace]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}  # Any: MLflow Span objects
    for trace in traces:
        groups.setdefault(trace.info.experiment_id or DEFAULT_EXPERIMENT_ID, []).extend(trace.data.spans)
    return groups


def _one_by_one(client: TracingClient, traces: Sequence[Trace]) -> StoreReport:
    stored: list[str] = []
    failed: dict[str, str] = {}
    for trace in traces:
        trace_id = trace.info.trace_id
        try:
            client.start_trace(trace.info)
            client.log_spans(trace.info.experiment_id or DEFAULT_EXPERIMENT_ID, list(trace.data.spans))
            stored.append(trace_id)
        except Exception as exc:
            failed[trace_id] = _short(exc)
    return StoreReport(stored=tuple(stored), failed=failed)


def tune_sqlite(client: TracingClient) -> None:
    """WAL journal and `synchronous=NORMAL` on the client's SQLite connections (no-op otherwise)."""
    if not client.tracking_uri.startswith("sqlite"):
        return
    from sqlalchemy import event

    engine = getattr(client.store, "engine", None)
    if engine is None:
        return

    def on_connect(dbapi_connection: Any, _record: Any) -> None:  # Any: a DB-API connection
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections reopen with the pragmas


def open_client(uri: str) -> TracingClient:
    """A tuned client on `uri` (the store is created or migrated if new)."""
    client = TracingClient(uri)
    tune_sqlite(client)
    return client


def handle_line(line: str, uri: str, client: TracingClient | None) -> tuple[str, TracingClient | None]:
    """Store one request line; return the reply line and the client (opened now if need be)."""
    try:
        traces = [Trace.from_dict(d) for d in json.loads(line)]
    except Exception as exc:
        return json.dumps({"error": f"unreadable batch: {_short(exc)}"}), client
    if client is None:
        try:
            check_tracking_store(uri)  # in seconds: MLflow itself retries opening for minutes
            client = open_client(uri)
        except Exception as exc:  # down or read-only: every batch says so until it opens
            return json.dumps({"error": f"cannot open the tracking store: {_short(exc)}"}), None
    try:
        return store_traces(client, traces).to_json(), client
    except Exception as exc:
        return json.dumps({"error": _short(exc)}), client


def main(argv: Sequence[str]) -> None:
    """Serve the protocol on stdin/stdout until stdin closes."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the protocol's channel ...
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # ... and stray prints go to the log
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    if hasattr(os, "nice"):
        # Storing traces is background work: under load the CPU goes to answering requests
        # first, and the writer catches up in the gaps (the server's queue bounds the backlog).
        os.nice(WRITER_NICENESS)
    uri = argv[0]
    client: TracingClient | None = None
    for line in sys.stdin:
        reply, client = handle_line(line, uri, client)
        replies.write(reply + "\n")
        replies.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
