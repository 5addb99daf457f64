"""`GET /metrics`: the server's Prometheus metrics, in the text format (`prometheus-client`).

    ragworks_requests_total{route,method,status}        requests answered
    ragworks_request_duration_seconds{route}            time to the last byte of the answer (histogram)
    ragworks_time_to_first_token_seconds{route}         streams: time to the first chunk with answer text
    ragworks_requests_in_flight                         requests being answered now
    ragworks_errors_total{route,kind}                   failed answers by error code (model_error,
                                                        model_overloaded, model_timeout, timeout,
                                                        server_overloaded, invalid_request, ...) and
                                                        streams cut short (cancelled)
    ragworks_traces_queued / _stored_total / _dropped_total / _retried_total    batched trace export
    ragworks_trace_export_batched                       1 when the counts above are kept (a database
                                                        store), 0 when MLflow's own exporter stores traces
    ragworks_conversations_stored                       conversations the server keeps (0 without a store)

Each app has its own `CollectorRegistry`, so several apps in one process never share a metric. With
`ragworks serve --workers N` each worker is its own process; `prepare_multiprocess_dir` (called by
`ragworks serve`) points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder, and every worker's `/metrics`
then answers the sum over all workers (prometheus-client's multiprocess mode), whichever worker the
scrape reaches. The trace counts of a worker reach that sum when it is scraped or, while it serves, at
most a second after they change. `/metrics` follows the server's bearer auth (it tells who uses the
server, and how) and is exempt from the concurrency limit, so a full server can still be scraped.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ragworks.config import env_flag
from ragworks.serving._metrics_asgi import Exchange, MetricsMiddleware
from ragworks.serving.request_id import RequestIdMiddleware
from ragworks.trace_export.batch import trace_export_stats
from ragworks.trace_export.retry_queue import ExportStats

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own setting: a folder shared by the worker processes of one server."""
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds: from a cached answer to the longest request the default --timeout allows."""
CONVERSATION_STORES = ("conversations", "conversation_store")
"""Where on `app.state` (besides the runtime's `state`) the conversation store is looked for; its
`count()` is the gauge's value."""
SYNC_INTERVAL_S = 1.0
"""How often a worker in multiprocess mode copies its trace counts out, while it serves."""


class ServingMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(
        self,
        *,
        multiprocess_dir: str | None = None,
        trace_stats: Callable[[], ExportStats | None] = trace_export_stats,
        conversations: Callable[[], int | None] = lambda: None,
    ) -> None:
        """`trace_stats` and `conversations` are read at each scrape (multiprocess: also while serving)."""
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self._trace_stats, self._conversations = trace_stats, conversations
        self._define(self.registry)
        self._children: dict[tuple[str, str, int], Any] = {}  # Any: prometheus-client's label children
        self._latency: dict[str, Any] = {}
        self._synced_at = 0.0
        self._reported = {"stored": 0, "dropped": 0, "retried": 0}

    def _define(self, registry: CollectorRegistry) -> None:
        labels = ("route", "method", "status")
        self.requests = Counter("ragworks_requests", "HTTP requests answered.", labels, registry=registry)
        self.latency = Histogram(
            "ragworks_request_duration_seconds",
            "Seconds from a request's arrival to the last byte of its answer.",
            ("route",),
            buckets=BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "ragworks_time_to_first_token_seconds",
            "Streamed answers: seconds from the request's arrival to the first chunk with answer text.",
            ("route",),
            buckets=BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "ragworks_requests_in_flight",
            "Requests being answered now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.errors = Counter(
            "ragworks_errors",
            "Failed answers by error code; streams cut short are `cancelled`.",
            ("route", "kind"),
            registry=registry,
        )
        self._define_traces(registry)

    def _define_traces(self, registry: CollectorRegistry) -> None:
        self.traces_queued = Gauge(
            "ragworks_traces_queued", "Traces waiting to be stored.", multiprocess_mode="livesum",
            registry=registry,
        )  # fmt: skip
        self.traces_stored = Counter("ragworks_traces_stored", "Traces stored.", registry=registry)
        self.traces_dropped = Counter(
            "ragworks_traces_dropped", "Traces given up on (store failing, queue full).", registry=registry
        )
        self.traces_retried = Counter(
            "ragworks_traces_retried", "Failed store attempts retried.", registry=registry
        )
        self.trace_export_batched = Gauge(
            "ragworks_trace_export_batched",
            "1 when the trace counts are kept (batched export), 0 when MLflow's exporter stores traces.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.conversations = Gauge(
            "ragworks_conversations_stored",
            "Conversations the server keeps.",
            multiprocess_mode="mostrecent",
            registry=registry,
        )

    def started(self) -> None:
        """A request came in."""
        self.in_flight.inc()

    def finished(self, exchange: Exchange) -> None:
        """Count one answered request (the hot path: cached label children, no allocation of note)."""
        self.in_flight.dec()
        status = exchange.status or 500  # nothing sent: Starlette's outermost handler answers 500
        route = exchange.route
        key = (route, exchange.method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, exchange.method, str(status))
        child.inc()
        end = exchange.finished or time.perf_counter()
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = self.latency.labels(route)
        latency.observe(end - exchange.started)
        if exchange.first_token is not None:
            self.ttft.labels(route).observe(exchange.first_token - exchange.started)
        kind = exchange.outcome()
        if kind is not None:
            self.errors.labels(route, kind).inc()
        if self.multiprocess_dir is not None and end - self._synced_at >= SYNC_INTERVAL_S:
            self._synced_at = end
            self.sync_traces()  # in memory, cheap; the conversation count (a query) waits for a scrape

    def sync_traces(self) -> None:
        """Copy the trace export's counts into the metrics."""
        stats = self._trace_stats()
        self.trace_export_batched.set(0 if stats is None else 1)
        if stats is not None:
            self._sync_traces(stats)

    def sync(self) -> None:
        """Copy the trace export's counts and the conversation count into the metrics."""
        self.sync_traces()
        try:
            count = self._conversations()
        except Exception as exc:  # a store that cannot count must not break the scrape
            logger.warning("Could not count the stored conversations: %s", exc)
            count = None
        if count is not None:
            self.conversations.set(count)

    def _sync_traces(self, stats: ExportStats) -> None:
        self.traces_queued.set(stats.pending)
        for name, counter in (
            ("stored", self.traces_stored),
            ("dropped", self.traces_dropped),
            ("retried", self.traces_retried),
        ):
            value = getattr(stats, name)
            if value < self._reported[name]:  # a new exporter: its counts start again from 0
                self._reported[name] = 0
            counter.inc(value - self._reported[name])
            self._reported[name] = value

    def render(self) -> bytes:
        """The metrics in Prometheus' text format: this app's, or every worker's in multiprocess mode."""
        self.sync()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)

    def close(self) -> None:
        """In multiprocess mode, take this worker out of the live gauges (requests in flight, queued)."""
        if self.multiprocess_dir is not None:
            prometheus_multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


def install_metrics(app: FastAPI) -> ServingMetrics:
    """Add `GET /metrics`, the metrics and request-id middleware (outermost), to `app`; call it last."""
    metrics = ServingMetrics(
        multiprocess_dir=env_flag(MULTIPROC_ENV) or None, conversations=lambda: _conversations(app)
    )
    app.state.metrics = metrics

    async def scrape() -> Response:
        body = await anyio.to_thread.run_sync(metrics.render)  # counting conversations may query a store
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(METRICS_PATH, scrape, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestIdMiddleware)
    paths = lambda: [getattr(route, "path", "") for route in app.routes]  # noqa: E731
    app.add_middleware(MetricsMiddleware, recorder=metrics, paths=paths, skip=frozenset({METRICS_PATH}))
    app.router.add_event_handler("shutdown", metrics.close)
    return metrics


def _conversations(app: FastAPI) -> int | None:
    """The count of the conversation store on `app.state`, when the app has one that can count."""
    runtime = getattr(app.state, "ragworks", None)
    stores = [getattr(runtime, "state", None)] + [getattr(app.state, n, None) for n in CONVERSATION_STORES]
    for store in stores:
        count = getattr(store, "count", None)
        if callable(count):
            value = count()
            return int(value) if isinstance(value, int) else None
    return None


def prepare_multiprocess_dir() -> str:
    """Before `--workers N` start: a fresh `PROMETHEUS_MULTIPROC_DIR`, so each worker's /metrics sums all.

    The folder named in the environment is used when set (its `*.db` files, left by an earlier run,
    are removed as prometheus-client asks); else a temporary one, removed when the server exits.
    """
    folder = env_flag(MULTIPROC_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(folder, "*.db")):
            os.remove(stale)
        return folder
    folder = tempfile.mkdtemp(prefix="ragworks-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = folder  # the worker processes inherit it
    return folder
