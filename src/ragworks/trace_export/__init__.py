"""Storing MLflow traces in batches, off the request path, none dropped.

`batch` swaps MLflow's span exporter for one that queues finished traces and stores them in
batches (in a writer process for servers, on a thread for evaluation runs); `writer` stores a batch
in one database transaction. Servers call `setup_server_tracing()` once at startup; `run_suite`
wraps its predictions in `batched_export()`.
"""

from ragworks.trace_export.batch import (
    BatchTraceExporter,
    batched_export,
    install_batch_export,
    prepare_tracking_store,
    setup_server_tracing,
)

__all__ = [
    "BatchTraceExporter",
    "batched_export",
    "install_batch_export",
    "prepare_tracking_store",
    "setup_server_tracing",
]
