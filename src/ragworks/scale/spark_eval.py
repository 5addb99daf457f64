"""`ragworks eval SUITE --spark`: rows predicted and judged offline on Spark; one MLflow run, as locally.

1. The suite's rows go to Spark in partitions (a conversation's turns stay together, in order);
   each executor builds the agent once (`_eval_partition`), predicts its rows exactly as the local
   run does, captures each row's trace in memory and runs the scorers that need no LLM: the
   retrieval metrics always, the judged ones when the judge is offline.
2. The driver collects the rows, stores their traces in the run's experiment in batches (executors
   never write to the tracking store) and runs the LLM judges, when there are any, in the local
   run's judge pool: same cache, concurrency and retries.
3. `mlflow.genai.evaluate` gets the rows with their outputs and traces, and scorers that hand back
   what was computed, so it links the traces to the run, logs the assessments and the means as
   for a local run; `run_suite` then adds the intervals, the gate and the report as always.

So a Spark run's metrics (names and values), traces, assessments and report are those of a local
run of the same suite; only `eval/elapsed_s` differs. Targets are a config or a model URI (an agent
object cannot travel to executors); on a cluster, the index folder and config must be readable there.

Example:
    >>> run_suite("agent.yaml", "suite.yaml", spark=True, spark_master="local[2]")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ragworks.config import AgentConfig
from ragworks.errors import ConfigError, EvalError
from ragworks.eval.judges import OFFLINE_NAMES, Judge
from ragworks.eval.scorers import CITATION_SCORERS, JUDGE_SCORERS, RETRIEVAL_SCORERS, SCORER_GROUPS
from ragworks.scale._eval_partition import RESULT_SCHEMA, ExecutorSpec, score_partition

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Trace
    from mlflow.genai.evaluation.entities import EvaluationResult
    from mlflow.genai.scorers import Scorer
    from pyspark.sql import SparkSession

    from ragworks.eval._prefetch import Row

logger = logging.getLogger(__name__)
STORE_BATCH = 128
"""Traces per store write on the driver."""
_JUDGED_HERE = frozenset((*JUDGE_SCORERS, *CITATION_SCORERS, *SCORER_GROUPS))


class EvalPlan(Protocol):
    """What a suite run hands over: its records, scorers and judge (see `ragworks.eval.runner`)."""

    @property
    def records(self) -> list[dict[str, Any]]:
        """One record per row and conversation turn (Any: JSON values)."""

    @property
    def scorers(self) -> list[Scorer]:
        """Every scorer of the run."""

    @property
    def judged(self) -> list[Scorer]:
        """The scorers that wait on the judge."""

    @property
    def judge(self) -> Judge:
        """The run's judge."""

    @property
    def only_ours(self) -> bool:
        """Every scorer is one of ragworks' own."""

    @property
    def predict_fn(self) -> Callable[..., object]:
        """The driver's `predict_fn(**inputs)`; called once, untraced, to check how it traces."""


def executor_target(target: object) -> str | dict[str, Any]:
    """What executors rebuild the agent from: a model URI, or the config as JSON with absolute paths.

    Raises:
        ConfigError: the target is an agent object or a callable, which cannot travel to executors.
    """
    from ragworks.eval._targets import is_model_uri

    if isinstance(target, str) and is_model_uri(target):
        return target
    if isinstance(target, (str, Path, Mapping, AgentConfig)):
        from ragworks.agents.prompt_registry import pinned_config

        config = AgentConfig.load(dict(target) if isinstance(target, Mapping) else target)
        return pinned_config(config).model_dump(mode="json")
    raise ConfigError(
        f"--spark evaluates a config file or a model URI, not a {type(target).__name__}: "
        "executors rebuild the agent, so pass --config agent.yaml or --model-uri models:/NAME/VERSION."
    )


def prepare(target: object, *, master: str | None, k: int) -> SparkEval:
    """Check the target can travel and start (or reuse) the SparkSession, before the MLflow run starts.

    Raises:
        ConfigError: pyspark or Java is missing, the master is wrong, or the target cannot travel.
    """
    from ragworks.eval import _prefetch
    from ragworks.scale import spark_session as sessions

    if _prefetch.ESSENTIAL_MISSING:  # executors predict rows as evaluate does, through these internals
        raise ConfigError(
            "--spark needs MLflow's evaluation internals, which this MLflow lacks "
            f"({', '.join(_prefetch.ESSENTIAL_MISSING)}); run the eval without --spark."
        )
    sessions.require_pyspark()
    spec_target = executor_target(target)
    return SparkEval(sessions.spark_session(master, app_name="ragworks-eval"), spec_target, k=k)


class SparkEval:
    """One suite run's Spark side: the session, and the agent its executors rebuild."""

    def __init__(self, session: SparkSession, target: str | dict[str, Any], *, k: int) -> None:
        self.session = session
        self.target = target
        self.k = k
        self.failed: list[str] = []
        """The executors' errors of the rows whose prediction failed (the last run)."""

    def prediction_errors(self, from_traces: list[str], *, rows: int) -> list[str]:
        """The gate's prediction line: from the traces' states, else from the executors' own errors.

        A failed row whose trace could not be captured or stored gets a minimal OK trace from evaluate, so
        its state alone would let the run pass.
        """
        if from_traces or not self.failed:
            return from_traces
        first = " ".join(self.failed[0].split())[:200]
        return [f"predictions: the agent failed on {len(self.failed)} of {rows} rows (first: {first})"]

    def evaluate(self, plan: EvalPlan, *, workers: int) -> EvaluationResult:
        """Predict and score on the executors, judge with an LLM here, log through `mlflow.genai.evaluate`."""
        import mlflow

        from ragworks.eval import _prefetch

        here = executor_scorers(plan)
        rows, scores = self._predict(plan, here, workers=workers)
        ahead = [s for s in plan.judged if s.name not in here]
        prepare = getattr(plan.judge, "prepare", None)
        if ahead and callable(prepare):
            prepare()
        early = {id(s) for s in ahead}
        with (
            _prefetch.eval_autologging(),
            _prefetch.JudgePool(ahead, workers=workers) as judging,
        ):
            for row in rows:
                judging.submit(row)
            lookups = [
                precomputed(s, scores)
                if s.name in here
                else _prefetch.memoised(s, judging)
                if id(s) in early
                else s
                for s in plan.scorers
            ]
            judging.pause()  # as in the local run: no judge job while evaluate sets up autologging
            try:
                with _prefetch.tuned_harness(unthrottled=plan.only_ours):
                    return mlflow.genai.evaluate(data=[r.record for r in rows], scorers=lookups)
            except Exception as exc:
                raise EvalError(f"mlflow.genai.evaluate failed on the Spark rows: {exc}") from exc

    def _predict(
        self, plan: EvalPlan, here: Sequence[str], *, workers: int
    ) -> tuple[list[Row], dict[tuple[str, str], object]]:
        """The rows predicted on the executors (traces stored) and their scores by (scorer, trace id)."""
        import mlflow

        from ragworks.scale._trace_check import traces_itself

        try:  # once, on the first row, as the local run checks it (and fails when that row fails)
            traced = traces_itself(plan.predict_fn, plan.records[0]["inputs"])
        except Exception as exc:
            raise EvalError(f"mlflow.genai.evaluate failed on the first row: {exc}") from exc
        thresholds = getattr(plan.judge, "thresholds", None) if here else None
        spec = ExecutorSpec(
            target=self.target,
            scorers=tuple(here),
            judge=plan.judge.name if here else "offline:lexical",
            thresholds=dict(thresholds) if thresholds else None,
            k=self.k,
            workers=workers,
            tracking_uri=mlflow.get_tracking_uri(),
            traced=traced,
            run_id=_active_run_id(),
        )
        frame = self._run_job(plan.records, spec)
        rows, scores = collect_rows(plan.records, frame)
        self.failed = [row.error for row in rows if row.error]
        return rows, scores

    def _run_job(self, records: Sequence[dict[str, Any]], spec: ExecutorSpec) -> pd.DataFrame:
        """Run the partitions; one row back per record, in any order."""
        import json

        groups = partition_groups(records)
        context = self.session.sparkContext
        slices = max(1, min(len(groups), context.defaultParallelism))
        items = [[(row, json.dumps(records[row])) for row in group] for group in groups]
        rdd = context.parallelize(items, slices).flatMap(lambda group: group)
        frame = self.session.createDataFrame(rdd, "row long, record string")
        scored = frame.mapInPandas(functools.partial(score_partition, spec), RESULT_SCHEMA)
        try:
            result = scored.toPandas()
        except Exception as exc:  # Py4J carries the executor's traceback: keep the last line of it
            raise EvalError(f"The Spark job of the eval failed: {_last_line(exc)}") from exc
        if len(result) != len(records):
            raise EvalError(f"Spark returned {len(result)} of {len(records)} rows; nothing was logged.")
        return result


def _active_run_id() -> str:
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run is not None else ""


def executor_scorers(plan: EvalPlan) -> list[str]:
    """The names of the run's scorers that run on executors: ours that need no LLM judge."""
    offline = _offline_judge(plan.judge)
    return [
        s.name
        for s in plan.scorers
        if s.name in RETRIEVAL_SCORERS or (offline and s.name in _JUDGED_HERE)
    ]


def _offline_judge(judge: Judge) -> bool:
    """Whether executors can rebuild the judge: an offline one, maybe with calibrated thresholds."""
    from ragworks.eval._offline_judge import OfflineJudge
    from ragworks.eval._thresholds import ThresholdJudge

    inner = judge.inner if isinstance(judge, ThresholdJudge) else judge
    return isinstance(inner, OfflineJudge) and judge.name in OFFLINE_NAMES


def partition_groups(records: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Row indexes in groups kept in one partition: a conversation's turns in turn order, else one row."""
    from ragworks.eval.conversations import turn_of

    groups: list[list[int]] = []
    turns: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        key = turn_of(record.get("inputs"))
        if key is None:
            groups.append([index])
        elif key[0] in turns:
            turns[key[0]].append(index)
        else:
            turns[key[0]] = [index]
            groups.append(turns[key[0]])
    for group in turns.values():
        group.sort(key=lambda i: turn_of(records[i].get("inputs")) or ("", 0))
    return groups


def collect_rows(
    records: Sequence[dict[str, Any]], frame: pd.DataFrame
) -> tuple[list[Row], dict[tuple[str, str], object]]:
    """The executors' rows as the local run's `Row`s (traces stored in the active run), and their scores."""
    import mlflow

    from ragworks.eval._prefetch import Row

    run = mlflow.active_run()
    if run is None:
        raise EvalError("The Spark eval logs into an active MLflow run; start one first.")
    rows: list[Row] = []
    scores: dict[tuple[str, str], object] = {}
    traces: list[Trace] = []
    for item in frame.sort_values("row").itertuples(index=False):
        payload = pickle.loads(item.payload)  # our own executors' output, over Spark
        error = item.error if isinstance(item.error, str) else None  # a missing string arrives as NaN
        row = Row(record={**records[int(item.row)], "outputs": payload["outputs"]}, error=error)
        if row.error:
            logger.warning("%s", row.error)
        if isinstance(item.trace, str):
            trace = _relocated(item.trace, experiment_id=run.info.experiment_id, run_id=run.info.run_id)
            row.record["trace"], row.trace_id = trace, trace.info.trace_id
            traces.append(trace)
            scores.update({(name, row.trace_id): value for name, value in payload["scores"].items()})
        rows.append(row)
    _store(traces, rows)
    return rows, scores


def _relocated(text: str, *, experiment_id: str, run_id: str) -> Trace:
    """An executor's trace, placed in the run's experiment and run (the driver's trace location)."""
    from mlflow.entities import Trace
    from mlflow.entities.trace_location import TraceLocation
    from mlflow.tracing.constant import TraceMetadataKey

    trace = Trace.from_json(text)
    trace.info.trace_location = TraceLocation.from_experiment_id(experiment_id)
    trace.info.trace_metadata[TraceMetadataKey.SOURCE_RUN] = run_id
    return trace


def _store(traces: Sequence[Trace], rows: Sequence[Row]) -> None:
    """Store the executors' traces in batches; a row whose trace was not stored gets one from evaluate."""
    from mlflow.tracing.client import TracingClient

    from ragworks.trace_export.writer import store_traces

    client = TracingClient()
    failed: dict[str, str] = {}
    for start in range(0, len(traces), STORE_BATCH):
        batch = traces[start : start + STORE_BATCH]
        report = store_traces(client, batch)
        stored = set(report.stored)
        for trace in batch:
            if trace.info.trace_id not in stored:
                failed[trace.info.trace_id] = report.failed.get(trace.info.trace_id, "not stored")
    if not failed:
        return
    first = next(iter(failed.items()))
    logger.warning(
        "%d of %d executor traces could not be stored (first: %s: %s); those rows get a root-span-only "
        "trace and are scored on the driver.",
        len(failed),
        len(traces),
        *first,
    )
    for row in rows:
        if row.trace_id in failed:
            row.record.pop("trace", None)


def precomputed(original: Scorer, results: dict[tuple[str, str], object]) -> Scorer:
    """A scorer with `original`'s name that returns what an executor computed for a trace.

    A row with no such result (its trace was not captured or not stored) is scored here, live.
    """
    import inspect

    from mlflow.genai.scorers import scorer

    options: dict[str, Any] = {}
    if "timeout" in inspect.signature(scorer).parameters:  # MLflow 3.16+ bounds each scorer call
        options["timeout"] = 0  # a lookup: nothing to bound

    @scorer(
        name=original.name,
        description=getattr(original, "description", None),
        aggregations=getattr(original, "aggregations", None),
        **options,
    )
    def lookup(inputs: Any, outputs: Any, expectations: Any = None, trace: Any = None) -> Any:
        key = (original.name, trace.info.trace_id) if trace is not None else None
        if key is None or key not in results:
            return original.run(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace)
        result = results.pop(key)
        if isinstance(result, Exception):
            raise result
        return result

    return lookup


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), None)
    return (error or (lines[-1] if lines else type(exc).__name__))[:500]
