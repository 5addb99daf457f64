"""The eval fast path, and the one place the eval code touches MLflow internals (feature-detected at import).

With `predict_fn`, `mlflow.genai.evaluate` exports each trace synchronously (five SQLite
transactions per two-span trace), starts its predict and score rate limiters at 10 calls/s, and
traces every judge HTTP call through OpenAI autologging (one more trace per call, deleted again at
the end). So `evaluate` here pipelines the work instead:

1. `predict_rows`: the agent runs on every row in a pool, traced exactly as `evaluate` would trace
   it (MLflow's own predict_fn wrapper and eval autologging). The traces are stored in batches
   (`ragworks.trace_export.batched_export`) and kept in memory, so no trace is read back;
2. as each row's prediction returns, `JudgePool.submit` starts its judge scorers in a pool, outside
   autologging, so only the judge's own bound (`concurrency`) limits them;
3. `mlflow.genai.evaluate` gets the traces as `data` and `memoised` scorers that wait for those
   results, so it logs assessments and links traces while later rows are still being judged;
4. while it runs (`tuned_harness`), its scorer rate limiter is off when every scorer is ours (the
   judging already happened under our judge's bound; the lookups cost nothing), unless the user set
   MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT; and its final re-read of every trace (one `get_trace`
   each, 1.7 s for 200 rows here) is one `search_traces` over the run reusing the spans in hand.

The internals used: `convert_predict_fn`, `configure_autologging_for_evaluation` and the harness's
`_refresh_eval_result_traces` and `_get_scorer_rate_config`. `AVAILABLE` says whether this MLflow
has the first two; where it does not, `run_suite` uses stock `evaluate(predict_fn=...)`. A missing
harness hook drops only that hook. Either way `log_fallback_once` says so, once per process.

Example:
    >>> result = evaluate(predict_fn, suite.to_records(), scorers, ahead=judge_scorers,  # doctest: +SKIP
    ...                   prepare=None, workers=8, unthrottled=True)
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mlflow.genai.evaluation.entities import EvaluationResult

logger = logging.getLogger(__name__)
_HARNESS_HOOKS = ("_refresh_eval_result_traces", "_get_scorer_rate_config")


def _detect() -> tuple[ModuleType | None, list[str], list[str]]:
    """The evaluation harness module, the essential internals this MLflow lacks, and its missing hooks."""
    missing = []
    try:
        from mlflow.genai.utils.trace_utils import convert_predict_fn  # noqa: F401
    except ImportError:
        missing.append("mlflow.genai.utils.trace_utils.convert_predict_fn")
    try:
        from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation  # noqa: F401
    except ImportError:
        missing.append("mlflow.models.evaluation.utils.trace.configure_autologging_for_evaluation")
    try:
        from mlflow.genai.evaluation import harness
    except ImportError:
        return None, missing, [f"harness.{name}" for name in _HARNESS_HOOKS]
    hooks = [f"harness.{name}" for name in _HARNESS_HOOKS if not callable(getattr(harness, name, None))]
    return harness, missing, hooks


_harness, _ESSENTIAL_MISSING, _HOOKS_MISSING = _detect()
MISSING = [*_ESSENTIAL_MISSING, *_HOOKS_MISSING]
"""Every internal of the fast path this MLflow lacks (empty on the supported versions)."""
ESSENTIAL_MISSING = tuple(_ESSENTIAL_MISSING)
"""The internals without which rows cannot be predicted outside `evaluate` (eval --spark needs them)."""


def eval_autologging() -> AbstractContextManager[Any]:
    """MLflow's autologging setup for evaluation, as `evaluate` does it around predictions."""
    from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation

    return cast(AbstractContextManager[Any], configure_autologging_for_evaluation(enable_tracing=True))
AVAILABLE = not _ESSENTIAL_MISSING
"""Whether the fast path runs at all (else: stock `evaluate`); a missing hook only drops that hook."""
_fallback_logged = threading.Event()


def log_fallback_once() -> None:
    """Say, once per process, that the fast path is off or partly off on this MLflow, and why."""
    if _fallback_logged.is_set() or not MISSING:
        return
    _fallback_logged.set()
    if not AVAILABLE:
        logger.warning(
            "ragworks' eval fast path is off: this MLflow lacks %s; "
            "using mlflow.genai.evaluate(predict_fn=...) (slower, same results).",
            ", ".join(MISSING),
        )
    else:
        logger.warning(
            "ragworks' eval fast path runs without MLflow's %s on this MLflow: "
            "its stock behaviour stays (slower, same results).",
            ", ".join(MISSING),
        )


def evaluate(
    predict_fn: Callable[..., Any],
    records: Sequence[dict[str, Any]],
    scorers: Sequence[Any],
    *,
    ahead: Sequence[Any],
    prepare: Callable[[], None] | None,
    workers: int,
    unthrottled: bool,
) -> EvaluationResult:
    """Predict and judge in our pools while `mlflow.genai.evaluate` logs and aggregates.

    Args:
        predict_fn: called as `predict_fn(**inputs)` on each record.
        records: the suite's records (inputs, expectations, tags).
        scorers: every scorer of the run (Any: mlflow Scorers).
        ahead: those of `scorers` to run in our pool as rows arrive (the judge-bound ones).
        prepare: the judge's `prepare`, run here before judging starts (see `JudgePool`).
        workers: rows predicted and scorers run at once.
        unthrottled: every scorer is ours: `evaluate`'s scorer rate limiter may be turned off.
    """
    import mlflow
    from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation

    if prepare is not None and ahead:
        prepare()  # the judge's client or model imports its modules here, not on a judge thread
    early = {id(s) for s in ahead}
    with (
        configure_autologging_for_evaluation(enable_tracing=True),
        JudgePool(ahead, workers=workers) as judging,
    ):
        rows = predict_rows(predict_fn, records, workers=workers, on_row=judging.submit)
        lookups = [memoised(s, judging) if id(s) in early else s for s in scorers]
        judging.pause()  # evaluate first sets up autologging: no judge job may run then (JudgePool)
        with tuned_harness(unthrottled=unthrottled):
            return mlflow.genai.evaluate(data=[r.record for r in rows], scorers=lookups)


@dataclass(slots=True, kw_only=True)
class Row:
    """One predicted suite row: the record for `evaluate` plus the trace id of its prediction."""

    record: dict[str, Any]
    """inputs, outputs, expectations, tags and (once known) trace (Any: JSON and a Trace)."""
    trace_id: str = ""
    error: str | None = None


class JudgePool:
    """Runs scorers on rows as they arrive; `take(name, trace_id)` hands out one pending result.

    `pause()` lets running jobs finish and holds new ones until `resume()`. MLflow's
    `configure_autologging_for_evaluation` (which `evaluate` enters first) registers import hooks
    under a lock; a judge thread importing a module for the first time at that moment (the OpenAI
    client's transports, the MiniLM model) deadlocks with it, so the pool is paused meanwhile.
    """

    def __init__(self, scorers: Sequence[Any], *, workers: int) -> None:
        self.scorers = list(scorers)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ragworks-judge")
        self._futures: dict[tuple[str, str], Future[Any]] = {}
        self._lock = threading.Lock()
        self._gate = threading.Condition()
        self._open = True
        self._running = 0

    def submit(self, row: Row) -> None:
        """Start every scorer on a traced row (rows without a trace are left to `evaluate`)."""
        trace = row.record.get("trace")
        if trace is None or not self.scorers:
            return
        with self._lock:
            for scorer in self.scorers:
                key = (scorer.name, trace.info.trace_id)
                self._futures[key] = self._pool.submit(self._run, scorer, row)

    def take(self, name: str, trace_id: str) -> Future[Any] | None:
        """The pending result of scorer `name` on a trace (each is handed out once), or None."""
        with self._lock:
            return self._futures.pop((name, trace_id), None)

    def pause(self) -> None:
        """Hold new jobs and wait until none runs."""
        with self._gate:
            self._open = False
            self._gate.wait_for(lambda: self._running == 0)

    def resume(self) -> None:
        """Let jobs start again (idempotent)."""
        if not self._open:
            with self._gate:
                self._open = True
                self._gate.notify_all()

    def _run(self, scorer: Any, row: Row) -> Any:
        with self._gate:
            self._gate.wait_for(lambda: self._open)
            self._running += 1
        try:
            return _score_one(scorer, row)
        finally:
            with self._gate:
                self._running -= 1
                self._gate.notify_all()

    def __enter__(self) -> JudgePool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.resume()
        self._pool.shutdown(wait=True, cancel_futures=kind is not None)


def predict_rows(
    predict_fn: Callable[..., Any],
    records: Sequence[dict[str, Any]],
    *,
    workers: int,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Call `predict_fn(**inputs)` on every record in a pool; return the rows with their traces.

    The function is wrapped the way `mlflow.genai.evaluate` wraps it (traced unless it traces
    itself; checked once on the first row with tracing off); call it inside MLflow's
    `configure_autologging_for_evaluation`, so the traces look exactly like the ones
    `evaluate(predict_fn=...)` produces. `on_row` sees each row as soon as its prediction and trace
    are there. Every trace is stored when this returns.
    """
    from mlflow.genai.utils.trace_utils import convert_predict_fn

    from ragworks.trace_export import batched_export

    call = convert_predict_fn(predict_fn=predict_fn, sample_input=records[0]["inputs"])
    with (
        batched_export(capture=True) as exporter,
        ThreadPoolExecutor(workers, thread_name_prefix="ragworks-predict") as pool,
    ):
        captured = exporter.captured if exporter is not None else None

        def one(record: dict[str, Any]) -> Row:
            row = _predict_one(call, record)
            trace = captured.get(row.trace_id) if captured is not None else None
            if trace is not None:
                row.record["trace"] = trace
                if on_row is not None:
                    on_row(row)
            return row

        rows = list(pool.map(one, records))
    missing = [row for row in rows if "trace" not in row.record]
    if missing:  # exported by MLflow's own exporter (not a database store): read them back
        _attach_traces(missing)
        if on_row is not None:
            for row in missing:
                on_row(row)
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
    """Read exported traces back (one search for the run, `get_trace` for any it missed)."""
    import mlflow

    mlflow.flush_trace_async_logging()
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


@contextmanager
def tuned_harness(*, unthrottled: bool) -> Iterator[None]:
    """While the block runs, `evaluate`'s final trace refresh is one search over the run, and (when
    `unthrottled` and the user set no MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT) its scorers are not rate limited.

    A scoped patch of the harness module (see the module docstring); MLflow's own functions are back on exit.
    """
    from mlflow.environment_variables import MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT

    harness = _harness
    if harness is None:
        yield
        return
    log_fallback_once()  # only when a hook is missing
    originals = {name: getattr(harness, name) for name in _HARNESS_HOOKS if hasattr(harness, name)}
    refresh_original = originals.get("_refresh_eval_result_traces")

    def refresh(eval_results: list[Any]) -> None:  # Any: the harness's EvalResult
        try:
            missing = _refresh_by_search(eval_results)
        except Exception as exc:
            logger.debug("Batched trace refresh failed (%s); refreshing trace by trace.", exc)
            missing = eval_results
        if missing and refresh_original is not None:
            refresh_original(missing)

    def no_rate_limit(*args: object, **kwargs: object) -> tuple[float | None, bool]:
        return None, False  # (requests per second: none, adaptive: no), as for a limit of "0"

    if refresh_original is not None:
        setattr(harness, "_refresh_eval_result_traces", refresh)  # noqa: B010
    throttled = not unthrottled or MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT.is_set()
    if "_get_scorer_rate_config" in originals and not throttled:
        setattr(harness, "_get_scorer_rate_config", no_rate_limit)  # noqa: B010
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(harness, name, original)


def _refresh_by_search(eval_results: list[Any]) -> list[Any]:
    """Give each result's trace its stored info (with the assessments); return those not found.

    The spans are the ones the result already holds (complete: they came from our exporter), so
    the search skips them, which makes it five times cheaper.
    """
    import mlflow
    from mlflow.entities import Trace

    run = mlflow.active_run()
    wanted = [r for r in eval_results if r is not None and r.eval_item.trace is not None]
    if run is None or not wanted:
        return wanted
    found = {
        t.info.trace_id: t
        for t in mlflow.search_traces(
            locations=[run.info.experiment_id],
            run_id=run.info.run_id,
            include_spans=False,
            return_type="list",
        )
    }
    missing = []
    for result in wanted:
        held = result.eval_item.trace
        stored = found.get(held.info.trace_id)
        if stored is None or not held.data.spans:
            missing.append(result)
        else:
            result.eval_item.trace = Trace(info=stored.info, data=held.data)
    return missing


def _score_one(scorer: Any, row: Row) -> Any:
    """A scorer's result on a row, or the exception it raised (raised again when `evaluate` asks)."""
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


def memoised(original: Any, judging: JudgePool) -> Any:
    """A scorer with `original`'s name that returns what `judging` computed for a trace (waiting).

    Rows it has no result for (a trace MLflow cloned, or an untraced row) are scored live.
    Any: an mlflow Scorer in, an mlflow Scorer out.
    """
    from mlflow.genai.scorers import scorer

    options: dict[str, Any] = {}
    if "timeout" in inspect.signature(scorer).parameters:  # MLflow 3.16+ bounds each scorer call
        options["timeout"] = 0  # it waits for our pool, whose judge calls have their own timeouts and retries

    @scorer(
        name=original.name,
        description=getattr(original, "description", None),
        aggregations=getattr(original, "aggregations", None),
        **options,
    )
    def lookup(inputs: Any, outputs: Any, expectations: Any = None, trace: Any = None) -> Any:
        judging.resume()  # evaluate is scoring: its autologging setup is done
        pending = judging.take(original.name, trace.info.trace_id) if trace is not None else None
        if pending is None:
            return original.run(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace)
        result = pending.result()
        if isinstance(result, Exception):
            raise result
        return result

    return lookup
