"""Which stored trace a feedback names: a trace id, or the response id the trace carries as a tag.

The server stores traces a moment after it answers (batched, see `trace_export`), so feedback posted
right after an answer may find no trace yet. `find_trace` then looks again, with backoff: for
`GRACE_S` when this process's writer holds nothing (another worker's writer may hold it), and up to
`wait_s` while it still holds traces (then the answer is "pending", not "unknown") or when MLflow's own
exporter stores them (whose queue cannot be asked). Only the searches run on threads; the waits are
the event loop's.
Where nothing here is traced, there is nothing to wait for, so an unknown id is answered at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.to_thread
import mlflow

from ragworks.serving._dispatch import RESPONSE_ID_TAG

logger = logging.getLogger(__name__)

GRACE_S = 1.0
"""How long an id that is not found yet is looked for, whatever this process has pending."""
WAIT_S = 5.0
"""How long it is looked for while this process's trace writer still holds traces."""
_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
"""What an id of ours looks like; others cannot name a trace (and never reach a filter string)."""
_LIMITER = anyio.CapacityLimiter(4)
"""Feedback's own threads, so a burst of it cannot take the threads bodies are parsed on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lookup:
    """The outcome: the trace id, or why there is none (`unknown`, or `pending`: not stored yet)."""

    trace_id: str | None
    outcome: Literal["found", "unknown", "pending"]


def _tracing_probe() -> Callable[[], bool]:
    """MLflow's own switch (`mlflow.tracing.disable()`), or "always on" where this MLflow has none."""
    try:
        from mlflow.tracing.provider import is_tracing_enabled
    except ImportError:
        logger.warning(
            "MLflow %s hides whether tracing is on: feedback waits for traces.",
            mlflow.__version__,
        )
        return lambda: True
    return is_tracing_enabled


TRACING_ENABLED = _tracing_probe()


def _traced_here() -> bool:
    """Whether this process traces its answers at all (else no trace of ours can be on its way)."""
    from mlflow.environment_variables import MLFLOW_TRACE_SAMPLING_RATIO

    return MLFLOW_TRACE_SAMPLING_RATIO.get() != 0 and TRACING_ENABLED()


def _pending_here() -> bool | None:
    """Whether this process's batch writer holds traces not stored yet (None: MLflow's own exporter,
    whose queue cannot be asked)."""
    from ragworks.trace_export.batch import trace_export_stats

    stats = trace_export_stats()
    return None if stats is None else stats.pending > 0


def _bound(pending: bool | None, wait_s: float) -> float:
    """Seconds to look for: the grace when nothing is pending here, `wait_s` while something is, and
    for MLflow's own exporter at least its batch interval (it holds spans that long before storing)."""
    if pending is False:
        return min(GRACE_S, wait_s)
    if pending is None:
        from mlflow.environment_variables import MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS

        return max(wait_s, MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS.get() / 1000 + 1)
    return wait_s


def stored_trace(*, trace_id: str | None = None, response_id: str | None = None) -> str | None:
    """The id of the stored trace with this id, or carrying this response id, in the active experiment.

    Only trace infos are read: spans may still be landing, and an assessment needs only the info.
    """
    where = f"trace.request_id = '{trace_id}'" if trace_id else f"tag.`{RESPONSE_ID_TAG}` = '{response_id}'"
    found = mlflow.search_traces(filter_string=where, max_results=1, return_type="list", include_spans=False)
    return found[0].info.trace_id if found else None


async def find_trace(
    *, trace_id: str | None = None, response_id: str | None = None, wait_s: float | None = None
) -> Lookup:
    """Look the trace up, and again with backoff while it may still be on its way to the store.

    `wait_s` bounds the looking (`WAIT_S` when None).
    """
    wait_s = WAIT_S if wait_s is None else wait_s
    if not _ID.fullmatch(trace_id or response_id or ""):
        return Lookup(trace_id=None, outcome="unknown")
    start = time.monotonic()
    delay = 0.05
    while True:
        found = await anyio.to_thread.run_sync(
            lambda: stored_trace(trace_id=trace_id, response_id=response_id), limiter=_LIMITER
        )
        if found is not None:
            return Lookup(trace_id=found, outcome="found")
        if not _traced_here():
            return Lookup(trace_id=None, outcome="unknown")
        waited = time.monotonic() - start
        pending = _pending_here()
        if waited >= _bound(pending, wait_s):
            return Lookup(trace_id=None, outcome="pending" if pending else "unknown")
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.5)
