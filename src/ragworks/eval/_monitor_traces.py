"""Which production traces a monitor pass scores: read past the watermark, sampled by id, not yet scored.

Sampling is a pure function of the trace id (`sampled`), so a restarted monitor picks the same
traces. A trace's scorers are done when it carries the monitor's assessment of that name or the
`ragworks.monitor.scored` tag lists the scorer (a scorer that had nothing to grade logs nothing).

Example:
    >>> sampled("tr-0123", 1.0), sampled("tr-0123", 0.0)
    (True, False)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Trace

SCORED_TAG = "ragworks.monitor.scored"
"""Trace tag: the comma-separated scorers the monitor ran on this trace."""
MONITOR_KEY = "ragworks.monitor.run"
"""Assessment metadata key naming the monitor run that logged it."""
PAGE_SIZE = 500


def sampled(trace_id: str, rate: float) -> bool:
    """True when the trace is in the sample: the first 8 bytes of sha256(trace id) / 2**64 < rate."""
    digest = hashlib.sha256(trace_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def done_scorers(trace: Trace) -> set[str]:
    """The scorers the monitor already ran on this trace (from its tag and its assessments)."""
    done = {n for n in (trace.info.tags or {}).get(SCORED_TAG, "").split(",") if n}
    for assessment in trace.info.assessments or []:
        if MONITOR_KEY in (assessment.metadata or {}):
            done.add(assessment.name)
    return done


def expectations_of(trace: Trace) -> dict[str, Any]:
    """Expectation assessments logged on the trace (e.g. expected_facts), by name; empty when none.

    Any: an expectation's value is whatever JSON its author logged.
    """
    out: dict[str, Any] = {}
    for assessment in trace.info.assessments or []:
        expectation = getattr(assessment, "expectation", None)
        if expectation is not None:
            out[assessment.name] = expectation.value
    return out


def _json(raw: Any) -> Any:
    """A trace's request / response: JSON text parsed, anything else as is (Any: the agent's JSON)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def inputs_outputs(trace: Trace) -> tuple[Any, Any]:
    """The root span's inputs and outputs (Any: whatever JSON the agent was called with / returned)."""
    return _json(trace.data.request), _json(trace.data.response)


def is_finished_ok(trace: Trace) -> bool:
    """True for a trace whose request finished without error (only those are graded)."""
    state = trace.info.state
    return str(getattr(state, "value", state)).upper() == "OK"


def read_since(
    client: MlflowClient, experiment_id: str, since_ms: int, *, limit: int | None = None
) -> Iterator[Trace]:
    """Trace infos of the experiment with timestamp >= since_ms, oldest first, paged; up to `limit`."""
    token: str | None = None
    count = 0
    while True:
        page = client.search_traces(
            locations=[experiment_id],
            filter_string=f"trace.timestamp_ms >= {int(since_ms)}",
            order_by=["timestamp_ms ASC"],
            max_results=PAGE_SIZE,
            page_token=token,
            include_spans=False,
        )
        for trace in page:
            yield trace
            count += 1
            if limit is not None and count >= limit:
                return
        token = page.token
        if not token:
            return
