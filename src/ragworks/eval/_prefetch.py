"""Predict every row and run the judge scorers in our own pools, before `mlflow.genai.evaluate`.

With `predict_fn`, `mlflow.genai.evaluate` exports each trace synchronously (five SQLite
transactions per two-span trace, against batched asynchronous export), starts its predict and score
rate limiters at 10 calls/s, and traces every judge HTTP call through OpenAI autologging (one more
trace per call, deleted again at the end). So the runner works in three steps:

1. `predict_rows`: the agent runs on every row in a pool, traced exactly as `evaluate` would trace
   it (MLflow's own predict_fn wrapper and eval autologging), with asynchronous trace export;
2. `score_rows`: the judge scorers run on (inputs, outputs, expectations, trace) in a pool, outside
   autologging, so only the judge's own bound (`concurrency`) limits them;
3. `evaluate` gets the traces as `data` and `memoised` scorers that hand back those results, so it
   only logs assessments, links the traces to the run and aggregates.

Example:
    >>> rows = predict_rows(predict_fn, suite.to_records(), workers=8)          # doctest: +SKIP
    >>> done = score_rows(judge_scorers, rows, workers=8)                       # doctest: +SKIP
    >>> mlflow.genai.evaluate(data=[r.record for r in rows], scorers=[memoised(s, done) for s in ...])
    ... # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)
CHUNK_ROWS = 128
"""Rows predicted between two flushes of MLflow's async trace export. MLflow drops traces when its
export queue is full (MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE, 1000 tasks: one per trace plus one
per batch of 5 spans), so the backlog stays bounded (128 traces of up to ~35 spans). Each flush
costs up to a second, the poll interval of MLflow's export consumer."""


@dataclass(slots=True, kw_only=True)
class Row:
    """One predicted suite row: the record for `evaluate` plus the trace id of its prediction."""

    record: dict[str, Any]
    """inputs, outputs, expectations, tags and (once fetched) trace (Any: JSON and a Trace)."""
    trace_id: str = ""
    error: str | None = None


def supported() -> bool:
    """Whether this MLflow has the evaluate internals `predict_rows` reuses (checked, not assumed)."""
    try:
        from mlflow.genai.utils.trace_utils import convert_predict_fn  # noqa: F401
        from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation  # noqa: F401
    except ImportError:
        return False
    return True


def predict_rows(
    predict_fn: Callable[..., Any], records: Sequence[dict[str, Any]], *, workers: int
) -> list[Row]:
    """Call `predict_fn(**inputs)` on every record in a pool; return the rows with their traces.

    The function is wrapped the way `mlflow.genai.evaluate` wraps it (traced unless it traces
    itself; checked once on the first row with tracing off), and GenAI autologging is enabled
    meanwhile, so the traces look exactly like the ones `evaluate(predict_fn=...)` produces.
    """
    import mlflow
    from mlflow.genai.utils.trace_utils import convert_predict_fn
    from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation

    call = convert_predict_fn(predict_fn=predict_fn, sample_input=records[0]["inputs"])
    rows: list[Row] = []
    with configure_autologging_for_evaluation(enable_tracing=True), ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(records), CHUNK_ROWS):
            rows.extend(pool.map(lambda r: _predict_one(call, r), records[start : start + CHUNK_ROWS]))
            mlflow.flush_trace_async_logging()
    _attach_traces(rows)
    return rows


def _predict_one(call: Callable[[dict[str, Any]], Any], record: dict[str, Any]) -> Row:
    import mlflow

    before = mlflow.get_last_active_trace_id(thread_local=True)
    row = Row(record=dict(record))
    failure: Exception | None = None
    try:
        row.record["outputs"] = call(record["inputs"])
    except Exception as exc:  # a failed prediction is an error on this row, as in evaluate
        failure = exc
        row.error = f"Failed to invoke the predict_fn with {record['inputs']}: {exc}"
        logger.warning("%s", row.error)
        row.record["outputs"] = None
    after = mlflow.get_last_active_trace_id(thread_local=True)
    row.trace_id = after if after is not None and after != before else _minimal_trace(row.record, failure)
    return row


def _minimal_trace(record: dict[str, Any], failure: Exception | None) -> str:
    """A root-span-only trace for a row whose prediction made none (a self-tracing function that
    failed before its first span): `evaluate` takes traces for all rows or for none."""
    import mlflow
    from mlflow.entities import SpanType

    with mlflow.start_span(name="predict_fn", span_type=SpanType.CHAIN) as span:
        span.set_inputs(record["inputs"])
        span.set_outputs(record["outputs"])
        if failure is not None:
            span.record_exception(failure)
    return span.trace_id


def _attach_traces(rows: list[Row]) -> None:
    """Read the exported traces back (one search for the run, `get_trace` for any it missed)."""
    import mlflow

    run = mlflow.active_run()
    found: dict[str, Any] = {}
    if run is not None:
        traces = mlflow.search_traces(
            locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list"
        )
        found = {t.info.trace_id: t for t in traces}
    lost = []
    for row in rows:
        trace = found.get(row.trace_id) or mlflow.get_trace(row.trace_id, silent=True)
        if trace is None:
            lost.append(row)
        else:
            row.record["trace"] = trace
    if lost:  # MLflow dropped them (export queue full): `evaluate` needs a trace on every row
        logger.warning("%d traces were not exported; logging minimal ones in their place.", len(lost))
        for row in lost:
            row.trace_id = _minimal_trace(row.record, None)
        mlflow.flush_trace_async_logging()
        for row in lost:
            row.record["trace"] = mlflow.get_trace(row.trace_id)


def score_rows(scorers: Sequence[Any], rows: Sequence[Row], *, workers: int) -> dict[tuple[str, str], Any]:
    """Run each scorer on each traced row in a pool: {(scorer name, trace id): result or exception}.

    Any: a scorer returns a Feedback, a list of them, a value or None; a raised exception is kept
    and raised again when `evaluate` asks, so the harness records it as it would have.
    """
    jobs = [(s, r) for r in rows if "trace" in r.record for s in scorers]
    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda job: _score_one(*job), jobs))
    return {(s.name, r.record["trace"].info.trace_id): res for (s, r), res in zip(jobs, results, strict=True)}


def _score_one(scorer: Any, row: Row) -> Any:
    record = row.record
    try:
        return scorer.run(
            inputs=record["inputs"],
            outputs=record.get("outputs"),
            expectations=record.get("expectations"),
            trace=record["trace"],
        )
    except Exception as exc:
        return exc


def memoised(original: Any, done: dict[tuple[str, str], Any]) -> Any:
    """A scorer with `original`'s name that returns the result `score_rows` computed for a trace.

    Rows it has no result for (a trace MLflow cloned, or an untraced row) are scored live.
    Any: an mlflow Scorer in, an mlflow Scorer out.
    """
    from mlflow.genai.scorers import scorer

    @scorer(
        name=original.name,
        description=getattr(original, "description", None),
        aggregations=getattr(original, "aggregations", None),
        timeout=0,  # a dictionary lookup; the live fallback keeps the original's own timeout
    )
    def lookup(inputs: Any, outputs: Any, expectations: Any = None, trace: Any = None) -> Any:
        key = (original.name, trace.info.trace_id) if trace is not None else None
        if key in done:
            result = done.pop(key)
            if isinstance(result, Exception):
                raise result
            return result
        return original.run(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace)

    return lookup
