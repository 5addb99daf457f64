"""Finished traces kept in memory, never stored: how a Spark executor traces the rows it evaluates.

Executors must not write to the driver's tracking store (several processes on one SQLite file, or a
store they cannot reach on a cluster), so within `captured_traces()` MLflow still assembles every
trace (spans, tags, token usage) but hands it to a dict instead of its exporter. The driver stores
the traces it collects (`ragworks.scale.spark_eval`). The swap goes through
`ragworks.trace_export._mlflow_hooks`, the one feature-detected module that reaches MLflow's
exporter; where it does not apply, the block yields None, logs that once, and the rows' traces are
then made on the driver by `mlflow.genai.evaluate` (root span only).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Trace
    from mlflow.entities.model_registry import PromptVersion

logger = logging.getLogger(__name__)
_fallback_logged = threading.Event()


class _NoQueue:
    """What MLflow's flush calls on an exporter's queue: nothing is queued here."""

    def flush(self, terminate: bool = False) -> None:
        """Nothing to store."""


@contextmanager
def captured_traces() -> Iterator[dict[str, Trace] | None]:
    """Within the block, each finished trace lands in the yielded dict (by trace id), not in a store.

    Yields None, after one log line per process, where MLflow's exporter cannot be swapped.
    """
    import mlflow

    from ragworks.trace_export import _mlflow_hooks

    processor = _mlflow_hooks.current_processor()
    if processor is None:
        if not _fallback_logged.is_set():
            _fallback_logged.set()
            logger.warning(
                "Executor traces cannot be captured on this MLflow (%s): each row gets a root-span-only "
                "trace on the driver, and scorers read sources from the outputs.",
                mlflow.__version__,
            )
        yield None
        return
    captured: dict[str, Trace] = {}

    def keep(trace: Trace, prompts: Sequence[PromptVersion], workspace: str | None) -> None:
        captured[trace.info.trace_id] = trace

    exporter = _mlflow_hooks.HookedExporter(mlflow.get_tracking_uri(), sink=keep, queue=_NoQueue())
    restore = _mlflow_hooks.swap_exporter(processor, exporter)
    try:
        yield captured
    finally:
        restore()
