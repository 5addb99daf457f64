"""The trace-writer process: stores batches of traces sent by the server, off the server's GIL.

    python -m ragworks.trace_export.writer <tracking-uri>

Protocol, one line each way: the server writes a JSON list of `Trace.to_dict()`s; the writer stores
them (`start_trace` each, then one `log_spans` for the batch) and answers `ok`. It exits at end of
input, i.e. when the server closes the pipe or dies.

A batch is stored in one database transaction when the store allows it (`one_transaction`): MLflow's
own `start_trace` and `log_spans` run unchanged, but share one session, one experiment lookup and one
commit, which halves the writer's CPU per trace (7.6 -> 3.7 ms here). Any rollback inside MLflow's
code (e.g. its merge path for a trace that already exists) aborts the whole transaction instead, and
the batch is then stored trace by trace as before, so nothing is half-written or lost.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from mlflow.entities import Span, Trace
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import SpansLocation, TraceTagKey
from mlflow.tracing.utils import add_size_stats_to_trace_metadata
from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

logger = logging.getLogger("ragworks.trace_export.writer")
WRITER_NICENESS = 10
"""Scheduling priority the writer process lowers itself by (Unix `nice`)."""
LOCKED_RETRIES = 3
"""Retries of a batch that SQLite refused with "database is locked"."""


_ONE_AT_A_TIME = threading.Lock()


class _RollbackRefused(Exception):
    """MLflow's code asked to roll back part of a shared transaction; the whole batch is redone."""


@contextmanager
def one_transaction(store: Any) -> Iterator[None]:
    """Run the store's writes inside this block in one session and commit once at its end.

    Any: MLflow's `SqlAlchemyStore`, whose `ManagedSessionMaker` (an internal) opens a session per
    call. Only the calling thread's calls share the session: the store object is shared by the
    process. Raises if MLflow's code calls `rollback()` in the block, since that would silently drop
    the writes made before it; the caller then stores the batch the ordinary way.
    """
    with _ONE_AT_A_TIME:  # the patches below must not nest
        yield from _shared_session(store)


def _shared_session(store: Any) -> Iterator[None]:
    owner = threading.get_ident()  # the store is shared: other threads keep their own sessions
    real_maker = store.ManagedSessionMaker
    real_get_experiment = store.get_experiment
    experiments: dict[str, Any] = {}

    def get_experiment(experiment_id: str) -> Any:
        if threading.get_ident() != owner:
            return real_get_experiment(experiment_id)
        if experiment_id not in experiments:
            experiments[experiment_id] = real_get_experiment(experiment_id)
        return experiments[experiment_id]

    with real_maker(read_only=False) as session:
        real_rollback = session.rollback

        def refuse_rollback() -> None:
            raise _RollbackRefused

        def maker(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == owner:
                return nullcontext(session)
            return real_maker(*args, **kwargs)

        session.rollback = refuse_rollback
        store.ManagedSessionMaker = maker
        store.get_experiment = get_experiment
        try:
            yield
        finally:
            store.ManagedSessionMaker = real_maker
            store.get_experiment = real_get_experiment
            session.rollback = real_rollback  # the outer session's own error handling needs it


def store_traces(client: TracingClient, traces: Sequence[Trace]) -> None:
    """Store a batch: in one transaction when possible, else trace by trace."""
    for trace in traces:
        add_size_stats_to_trace_metadata(trace)
        # The spans go to the store's spans table (below), not to a trace-data artifact.
        trace.info.tags[TraceTagKey.SPANS_LOCATION] = SpansLocation.TRACKING_STORE.value
    store = client.store
    if hasattr(store, "ManagedSessionMaker") and hasattr(store, "get_experiment"):
        for attempt in range(LOCKED_RETRIES + 1):
            try:
                with one_transaction(store):
                    _write(client, traces, strict=True)
                return
            except Exception as exc:  # rolled back as a whole: nothing of the batch was stored
                # SQLite refuses at once (no busy wait) a read transaction that turns into a write
                # while another connection writes: worth another go before the slower path.
                if "locked" in str(exc).lower() and attempt < LOCKED_RETRIES:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                logger.debug("Storing %d traces one by one: %s", len(traces), exc)
                break
    _write(client, traces, strict=False)


def _write(client: TracingClient, traces: Sequence[Trace], *, strict: bool) -> None:
    """`start_trace` per trace, then one `log_spans` per experiment; `strict` raises on any failure."""
    spans: defaultdict[str | None, list[Span]] = defaultdict(list)
    for trace in traces:
        try:
            client.start_trace(trace.info)
        except Exception as exc:
            if strict:
                raise
            logger.warning("Could not store the trace %s: %s", trace.info.trace_id, exc)
        spans[trace.info.experiment_id].extend(trace.data.spans)
    for experiment_id, group in spans.items():
        try:
            client.log_spans(experiment_id or DEFAULT_EXPERIMENT_ID, group)
        except Exception as exc:
            if strict:
                raise
            logger.warning("Could not store the spans of %d traces: %s", len(traces), exc)


def _open_store(uri: str, *, attempts: int = 5) -> None:
    """Open (and, if new, create) the store; another worker's writer may be creating it right now."""
    from ragworks.trace_export.batch import tune_sqlite

    for attempt in range(attempts):
        try:
            tune_sqlite(uri)
            return
        except Exception as exc:  # e.g. "table _alembic_tmp_tags already exists" mid-migration
            if attempt == attempts - 1:
                raise
            logger.warning("Could not open the tracking store yet (%s); retrying.", exc)
            time.sleep(1 + attempt)


def main(argv: Sequence[str]) -> None:
    """Serve the protocol on stdin/stdout until stdin closes."""
    import json
    import os

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the protocol's channel ...
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # ... and stray prints go to the log
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    if hasattr(os, "nice"):
        # Storing traces is background work: under load the CPU goes to answering requests
        # first, and the writer catches up in the gaps (the server's queue bounds the backlog).
        os.nice(WRITER_NICENESS)
    uri = argv[0]
    _open_store(uri)
    client = TracingClient(uri)
    for line in sys.stdin:
        try:
            store_traces(client, [Trace.from_dict(d) for d in json.loads(line)])
        except Exception:  # a bad batch must not stop the writer
            logger.exception("Could not store a batch of traces.")
        replies.write("ok\n")
        replies.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
