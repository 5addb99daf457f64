"""The one place trace export reaches into MLflow's tracing internals: who stores a finished trace.

MLflow assembles a trace (spans, tags, metadata, token usage) in its span processor and hands it to
`MlflowV3SpanExporter._log_trace`, which stores it from a thread pool on the server's own GIL, one
transaction per handful of spans. No public setting lets a finished trace go elsewhere, so
`HookedExporter` keeps MLflow's exporter and overrides two of its methods: `_log_trace` hands the
trace to a sink (our queue) and `_export_spans_incrementally` does nothing (the spans travel with
their trace). `swap_exporter` puts it under MLflow's span processor in place of the stock one.

What is used is checked once, at import (`MISSING`). When anything is missing (another MLflow
release), `current_processor` logs one warning and returns None: MLflow's own exporter then stores
every trace, and `tests/integration/test_trace_export.py` fails on the versions we support.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import mlflow
from mlflow.entities import Trace
from mlflow.entities.model_registry import PromptVersion

logger = logging.getLogger(__name__)

Sink = Callable[[Trace, Sequence[PromptVersion], "str | None"], None]
"""Where a finished trace goes: (trace, prompt versions to link, workspace)."""


class Flushable(Protocol):
    """What `mlflow.flush_trace_async_logging()` calls on an exporter's `_async_queue`."""

    def flush(self, terminate: bool = False) -> None:
        """Store everything queued; with `terminate`, stop the background work too."""


def _find_missing() -> tuple[str, ...]:
    """The internals this module needs that this MLflow lacks (empty on supported versions)."""
    missing: list[str] = []
    try:
        from mlflow.tracing import provider
        from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter
        from mlflow.tracing.processor.mlflow_v3 import MlflowV3SpanProcessor  # noqa: F401
    except ImportError as exc:
        return (f"import: {exc}",)
    for owner, name in (
        (provider, "_get_span_processor"),
        (provider, "_get_tracer"),
        (MlflowV3SpanExporter, "_log_trace"),
        (MlflowV3SpanExporter, "_export_spans_incrementally"),
        (MlflowV3SpanExporter, "_export_traces"),
    ):
        if not hasattr(owner, name):
            missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
    return tuple(missing)


def workspace_context(workspace: str) -> AbstractContextManager[object]:
    """MLflow's context for storing into `workspace` (releases without workspaces never name one)."""
    from mlflow.utils.workspace_context import ServerWorkspaceContext

    context: AbstractContextManager[object] = ServerWorkspaceContext(workspace)
    return context


def current_experiment_id() -> str | None:
    """The experiment new traces go to, as MLflow resolves it; None where this MLflow hides how."""
    try:
        from mlflow.tracking.fluent import _get_experiment_id
    except ImportError:  # MLflow then resolves the experiment per trace, as it does by default
        logger.warning(
            "MLflow %s has no _get_experiment_id: each trace resolves its experiment.", mlflow.__version__
        )
        return None
    experiment_id: str | None = _get_experiment_id()
    return experiment_id


MISSING: tuple[str, ...] = _find_missing()
"""MLflow internals this module needs but cannot find; empty on every supported MLflow."""
_fallback_logged = threading.Event()


def _log_fallback_once(reason: str) -> None:
    if not _fallback_logged.is_set():
        _fallback_logged.set()
        logger.warning(
            "Batched trace export is off on MLflow %s (%s): MLflow's own exporter stores traces. "
            "Install a supported MLflow (see pyproject.toml) for batched export.",
            mlflow.__version__,
            reason,
        )


if not MISSING:
    from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter
    from opentelemetry.sdk.trace import ReadableSpan

    class HookedExporter(MlflowV3SpanExporter):
        """MLflow's exporter, handing each finished trace to `sink` instead of storing it."""

        def __init__(self, tracking_uri: str, *, sink: Sink, queue: Flushable) -> None:
            super().__init__(tracking_uri)
            self._sink = sink
            self._is_async_enabled = False  # MLflow's thread pool is bypassed: the sink queues
            self._async_queue = queue  # type: ignore[assignment]  # flushed by mlflow's own flush

        def _export_spans_incrementally(self, spans: Sequence[ReadableSpan]) -> None:
            """Spans are stored with their finished trace, in one write for the batch."""

        def _log_trace(
            self, trace: Trace, prompts: Sequence[PromptVersion], workspace: str | None = None
        ) -> None:
            self._sink(trace, prompts, workspace)

        def store_with_mlflow(
            self, trace: Trace, prompts: Sequence[PromptVersion], workspace: str | None
        ) -> None:
            """MLflow's own storing of one trace (prompt links, attachments, workspaces)."""
            if workspace is None:  # MLflow before 3.15 takes no workspace argument
                super()._log_trace(trace, prompts)
            else:
                super()._log_trace(trace, prompts, workspace)  # type: ignore[call-arg, unused-ignore]

        @property
        def client(self) -> Any:
            """MLflow's `TracingClient` of this exporter (Any: an internal attribute)."""
            return self._client


def current_processor() -> Any:
    """MLflow's span processor when it is the stock one with the stock exporter, else None.

    Any: MLflow's `MlflowV3SpanProcessor`, an internal. None also when hooks are missing (logged
    once), when tracing goes elsewhere (OTLP, Databricks) or when our exporter is already in.
    """
    if MISSING:
        _log_fallback_once("missing: " + ", ".join(MISSING))
        return None
    from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter
    from mlflow.tracing.processor.mlflow_v3 import MlflowV3SpanProcessor
    from mlflow.tracing.provider import _get_span_processor, _get_tracer

    _get_tracer(__name__)  # make MLflow set up its tracer provider now, not on the first span
    processor = _get_span_processor()
    if type(processor) is not MlflowV3SpanProcessor:
        return None
    if type(processor.span_exporter) is not MlflowV3SpanExporter:  # someone else's, or ours
        return None
    if not hasattr(processor, "_batch_delegate"):  # where MLflow keeps its batch span processor
        _log_fallback_once("missing: MlflowV3SpanProcessor._batch_delegate")
        return None
    return processor


def exports_to(exporter: Any) -> bool:
    """Whether MLflow's span processor still exports to `exporter`.

    `mlflow.set_experiment` and `mlflow.tracing.reset` replace MLflow's tracer provider, and with it
    the processor our exporter was swapped into; later traces then go MLflow's own way.
    """
    if MISSING:
        return False
    from mlflow.tracing.provider import _get_span_processor

    return getattr(_get_span_processor(), "span_exporter", None) is exporter


def swap_exporter(processor: Any, exporter: Any) -> Callable[[], None]:
    """Make `processor` export each ended span inline to `exporter`; return what undoes it.

    MLflow's own batch span processor (`_batch_delegate`) is flushed and set aside: with our
    exporter a finished trace is only queued, so exporting inline costs the request nothing.
    """
    original, delegate = processor.span_exporter, getattr(processor, "_batch_delegate", None)
    if delegate is not None:
        delegate.force_flush()  # spans it still holds go out the stock way first
    processor.span_exporter, processor._batch_delegate = exporter, None

    def restore() -> None:
        processor.span_exporter, processor._batch_delegate = original, delegate

    return restore
