"""Storing MLflow traces in batches, off the request path, with honest counts of what was stored.

`batch` puts an exporter under MLflow's tracing that queues finished traces (`retry_queue`) and
stores them in batches (in a writer process for servers, `writer_process`; on a thread for
evaluation runs); `writer` stores a batch in one database transaction and reports each trace.
`store_check` answers in seconds whether the tracking store can take traces. Servers call
`setup_server_tracing()` once at startup; `run_suite` wraps its predictions in `batched_export()`.
`_mlflow_hooks` and `_sql_session` hold the only uses of MLflow internals, each feature-detected.
"""

from ragworks.trace_export.batch import (
    BatchTraceExporter,
    batched_export,
    install_batch_export,
    prepare_tracking_store,
    setup_server_tracing,
    trace_export_stats,
)
from ragworks.trace_export.retry_queue import ExportStats
from ragworks.trace_export.store_check import check_tracking_store

__all__ = [
    "BatchTraceExporter",
    "ExportStats",
    "batched_export",
    "check_tracking_store",
    "install_batch_export",
    "prepare_tracking_store",
    "setup_server_tracing",
    "trace_export_stats",
]
