"""The trace-writer process: stores batches of traces sent by the server, off the server's GIL.

    python -m ragworks.serving._trace_writer <tracking-uri>

Protocol, one line each way: the server writes a JSON list of `Trace.to_dict()`s; the writer stores
them (`start_trace` each, then one `log_spans` for the batch) and answers `ok`. It exits at end of
input, i.e. when the server closes the pipe or dies.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Sequence

from mlflow.entities import Span, Trace
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import SpansLocation, TraceTagKey
from mlflow.tracing.utils import add_size_stats_to_trace_metadata
from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

logger = logging.getLogger("ragworks.serving.trace_writer")


def store_traces(client: TracingClient, traces: Sequence[Trace]) -> None:
    """Each trace's info, tags and metadata (`start_trace`), then all their spans in one transaction."""
    spans: defaultdict[str | None, list[Span]] = defaultdict(list)
    for trace in traces:
        add_size_stats_to_trace_metadata(trace)
        # The spans go to the store's spans table (below), not to a trace-data artifact.
        trace.info.tags[TraceTagKey.SPANS_LOCATION] = SpansLocation.TRACKING_STORE.value
        try:
            client.start_trace(trace.info)
        except Exception as exc:
            logger.warning("Could not store the trace %s: %s", trace.info.trace_id, exc)
        spans[trace.info.experiment_id].extend(trace.data.spans)
    for experiment_id, group in spans.items():
        try:
            client.log_spans(experiment_id or DEFAULT_EXPERIMENT_ID, group)
        except Exception as exc:
            logger.warning("Could not store the spans of %d traces: %s", len(traces), exc)


def _open_store(uri: str, *, attempts: int = 5) -> None:
    """Open (and, if new, create) the store; another worker's writer may be creating it right now."""
    import time

    from ragworks.serving._trace_export import tune_sqlite

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
