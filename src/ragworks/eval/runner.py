"""Run a suite against an agent through `mlflow.genai.evaluate` and summarise it in one MLflow run.

The run gets each metric's mean (MLflow's `<name>/mean`) plus a 95% bootstrap interval
(`<name>/ci_low`, `<name>/ci_high`), row and error counts, per-row assessments on the traces, a
results table (`eval_results.json`, one row per suite row with a key of its inputs) and a report
(`eval_report.html` / `.md`). Thresholds (`fail_under`), metrics in error and a significant
regression against a baseline run (paired row by row) decide pass / fail. This module orchestrates;
targets (`_targets`), statistics (`_stats`), the paired comparison (`paired`), repeat judging
(`repeats`), the gate (`_gate`), logging (`_logging`) and the fast path (`_prefetch`) live beside it.

Example:
    >>> result = run_suite("agent.yaml", "suite.yaml", fail_under={"faithfulness": 0.8})  # doctest: +SKIP
    >>> result.passed, result.metrics["faithfulness"].mean                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ragworks.errors import ConfigError, EvalError
from ragworks.eval._extract import answer_of, question_of
from ragworks.eval._gate import (
    check_every_row_traced,
    check_threshold_names,
    failed_predictions,
    judged_errors,
    missing_traces,
    threshold_failures,
)
from ragworks.eval._logging import log_result
from ragworks.eval._stats import (
    BOOTSTRAP_SAMPLES,
    MetricSummary,
    as_float,
    bootstrap_ci,
    metric_names,
    summarise,
)
from ragworks.eval._targets import PredictFn, Target, bounded, make_predict_fn
from ragworks.eval._thresholds import with_thresholds
from ragworks.eval.conversation_summary import (
    CONVERSATION_METRICS,
    ConversationSummary,
    pairing_inputs,
    summarise_conversations,
    turn_columns,
)
from ragworks.eval.conversations import has_turns, play_conversations
from ragworks.eval.custom_judges import CustomJudgeSpec, custom_scorers, gather_specs
from ragworks.eval.judges import Judge, get_judge
from ragworks.eval.mlflow_scorers import is_mlflow_name, mlflow_scorer
from ragworks.eval.paired import (
    KEY_COLUMN,
    PairedComparison,
    PairedMetric,
    check_shared_questions,
    compare_tables,
    load_results,
    row_keys,
)
from ragworks.eval.repeats import RepeatStats, judge_again, repeat_judge
from ragworks.eval.scorers import DEFAULT_SCORERS, JUDGE_SCORERS, SCORER_GROUPS, SCORER_NAMES, make_scorer
from ragworks.eval.suite import EvalSuite, example_suite

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.genai.evaluation.entities import EvaluationResult
    from mlflow.genai.scorers import Scorer

    from ragworks.scale.spark_eval import SparkEval

logger = logging.getLogger(__name__)
ScorerSpec: TypeAlias = "str | Scorer"
"""A scorer name (SCORER_NAMES), or any MLflow Scorer (built-ins included)."""


@dataclass(slots=True, kw_only=True)
class SuiteResult:
    """What a suite run produced; `passed` is False on a failed threshold, a regression or an error."""

    run_id: str
    suite: str
    metrics: dict[str, MetricSummary]
    values: dict[str, list[float]]
    """Per-row values of each metric, for histograms."""
    table: pd.DataFrame
    """One row per suite row: question, answer, each metric's value, rationale and error."""
    failures: list[str] = field(default_factory=list)
    comparison: PairedComparison | None = None
    """The row-by-row comparison with the baseline run, when one was given."""
    repeats: dict[str, RepeatStats] = field(default_factory=dict)
    """Per judged metric, its stability over repeated judging (with `repeats` > 1)."""
    errors: list[str] = field(default_factory=list)
    """Metrics with rows in error or none scored, one line each (see `ragworks.eval._gate`)."""
    allow_errors: bool = False
    """Whether `errors` are reported without failing the run."""
    judge: str = ""
    judge_stats: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    report: str = ""
    """The report's artifact path in the run."""
    ui_url: str = ""
    """The MLflow UI's address the report links trace ids to (empty: see `ragworks.eval._report_rows`)."""
    conversations: ConversationSummary | None = None
    """Per-turn means and the conversation metrics, when the suite has conversations."""

    @property
    def regressions(self) -> list[PairedMetric]:
        """The metrics significantly worse than in the baseline run (paired test at its alpha)."""
        return self.comparison.regressions if self.comparison is not None else []

    @property
    def passed(self) -> bool:
        """True when every threshold held, nothing regressed and (unless allowed) no metric erred."""
        return not self.failures and not self.regressions and (self.allow_errors or not self.errors)

    def summary(self) -> str:
        """A plain-text table of the metrics and the verdict."""
        from ragworks.eval.report import summary_table

        return summary_table(self)


def resolve_scorers(specs: Sequence[ScorerSpec] | None, *, judge: Judge, k: int) -> list[Scorer]:
    """Scorer names become our scorers (sharing `judge`); Scorer objects pass through unchanged.

    A `mlflow:<Name>` names one of MLflow's built-in scorers (see `ragworks.eval.mlflow_scorers`).

    Raises:
        EvalError: a name is not one of SCORER_NAMES.
        ConfigError: a `mlflow:` name is no MLflow built-in, or needs an LLM judge.
    """
    out = []
    for spec in specs or DEFAULT_SCORERS:
        if is_mlflow_name(spec):
            out.append(mlflow_scorer(str(spec), judge=judge))
        elif isinstance(spec, str):
            if spec not in SCORER_NAMES and spec not in SCORER_GROUPS:
                raise EvalError(f"Unknown scorer {spec!r}. Available: {', '.join(SCORER_NAMES)}.")
            out.append(make_scorer(spec, judge=judge, k=k))
        else:
            out.append(spec)
    return out


def check_judge(judge: Judge) -> None:
    """Run the judge's own preflight (`check()`: key present, endpoint reachable) when it has one."""
    check = getattr(judge, "check", None)
    if callable(check):
        check()


def run_suite(
    target: Target,
    suite: EvalSuite | str | Path,
    *,
    scorers: Sequence[ScorerSpec] | None = None,
    judge: str | Judge = "offline",
    k: int = 5,
    fail_under: Mapping[str, float] | None = None,
    allow_errors: bool = False,
    baseline_run_id: str | None = None,
    repeats: int = 1,
    experiment: str | None = None,
    run_name: str | None = None,
    concurrency: int = 8,
    report_format: str = "html",
    prefetch: bool = True,
    judge_thresholds: str | Path | None = None,
    ui_url: str | None = None,
    custom_judges: str | Path | Sequence[CustomJudgeSpec] | None = None,
    spark: bool = False,
    spark_master: str | None = None,
) -> SuiteResult:
    """Evaluate `target` on `suite` in one MLflow run and return the summary.

    Threshold names and the judge (key, endpoint) are checked before any row runs.

    Args:
        target: an agent (anything with `.predict(request)`), a model URI (`models:/...`, `runs:/...`),
            an AgentConfig / dict / YAML path (built with `build_agent`), or a callable(request).
        suite: an EvalSuite, a YAML / JSONL path, or `mlflow-dataset:<name or id>`.
        scorers: names (SCORER_NAMES) and / or MLflow Scorer objects; default DEFAULT_SCORERS.
        judge: the judge name for our judge-based scorers (see `get_judge`), or a Judge.
        k: the cut-off of the retrieval metrics.
        fail_under: minimum means, e.g. `{"faithfulness": 0.8}`; names must be metrics of the run.
        allow_errors: report metrics with rows in error (or none scored) without failing the run.
        baseline_run_id: a previous run of the same suite: rows are paired by their inputs and a
            metric whose paired test (McNemar / Wilcoxon, alpha 0.05) says it got worse regresses.
        repeats: judge each row this many times and report each judged metric's flip rate and
            within-row variance (LLM judges call anew for each repeat instead of using the cache).
        experiment: MLflow experiment name (default: the active one).
        run_name: the MLflow run name (default: the suite name).
        concurrency: rows predicted and scored at once, and judge calls in flight (with
            `prefetch=False`, MLflow's harness sizes its own pools: MLFLOW_GENAI_EVAL_MAX_WORKERS).
        report_format: `html` (with a score histogram per metric) or `md`.
        judge_thresholds: a file `ragworks eval calibrate --thresholds-out` wrote: each judgement of a
            calibrated metric then says pass / fail at its threshold (`passed` in its details).
        custom_judges: a YAML file of custom judges (or the specs), run by the LLM judge besides the
            suite's own `judges:` (see `ragworks.eval.custom_judges`); an offline judge refuses them.
        ui_url: the MLflow UI's address, for links from the report's trace ids (default:
            RAGWORKS_MLFLOW_UI, else the tracking URI when it is http(s)).
        prefetch: predict every row and run our judge scorers in our own pools first, then hand
            `mlflow.genai.evaluate` the traces (see `ragworks.eval._prefetch`); False passes
            `predict_fn` to `evaluate` and lets its harness do both (several times slower).
        spark: predict and run the offline judges on Spark executors, logging the same run
            (see `ragworks.scale.spark_eval`); the target must then be a config or a model URI.
        spark_master: the Spark master when no session is active (default `local[*]`).

    Raises:
        ConfigError: a `fail_under` name is not a metric of the run, or the judge lacks its key.
        EvalError: the suite, the target or a scorer name is invalid, the judge cannot be reached,
            the baseline run has no results table or shares no row with this run, or MLflow failed.
    """
    import mlflow

    from ragworks.eval._prompt_params import log_prompt_params

    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}.")
    baseline = load_results(baseline_run_id) if baseline_run_id else None  # before any row runs
    judge = with_thresholds(judge, judge_thresholds, concurrency=concurrency)
    plan = _plan(
        target,
        suite,
        scorers=scorers,
        judge=judge,
        k=k,
        fail_under=fail_under,
        workers=concurrency,
        custom_judges=custom_judges,
    )
    if baseline is not None:
        check_shared_questions(baseline, plan.suite.questions(), baseline=str(baseline_run_id))
    spark_run = _spark_prepare(target, master=spark_master, k=k) if spark else None
    if experiment:
        mlflow.set_experiment(experiment)
    start = time.perf_counter()
    with mlflow.start_run(run_name=run_name or plan.suite.name) as run:
        log_prompt_params(target)  # a registry system prompt: the version this run measures
        evaluation = _evaluate(plan, prefetch=prefetch, workers=concurrency, spark=spark_run)
        result = _result(run.info.run_id, plan, evaluation)
        result.elapsed_s = time.perf_counter() - start
        result.allow_errors = allow_errors
        result.ui_url = ui_url or ""
        result.failures = threshold_failures(result.metrics, fail_under)
        result.errors = failed_predictions(result.table["trace_id"], result.table["state"])
        if spark_run is not None:
            result.errors = spark_run.prediction_errors(result.errors, rows=len(plan.records))
        result.errors += judged_errors(result.metrics, [*plan.names, *CONVERSATION_METRICS])
        result.errors += missing_traces(run.info, rows=len(plan.records))
        if baseline is not None:
            result.comparison = compare_tables(
                baseline,
                result.table,
                [m for m in result.metrics if m in result.table],
                baseline=str(baseline_run_id),
                current=run.info.run_id,
            )
        if repeats > 1:
            result.repeats = _judge_again(plan, evaluation, result, repeats=repeats, k=k, workers=concurrency)
        log_result(
            result,
            rows=len(plan.records),
            scorer_names=plan.names,
            k=k,
            fail_under=fail_under,
            report_format=report_format,
        )
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """A run that passed every check that needs no row: what to predict, with what, scored how."""

    suite: EvalSuite
    judge: Judge
    scorers: list[Scorer]
    names: list[str]
    judged: list[Scorer]
    """Our judge scorers: the ones worth running ahead, as they wait on the judge, not the CPU."""
    only_ours: bool
    predict_fn: PredictFn
    records: list[dict[str, Any]]
    """The suite's records, one per row and per conversation turn (Any: JSON values)."""
    custom: list[CustomJudgeSpec] = field(default_factory=list)
    """The custom judges of the run (the suite's and a judges file's)."""


def _plan(
    target: Target,
    suite: EvalSuite | str | Path,
    *,
    scorers: Sequence[ScorerSpec] | None,
    judge: str | Judge,
    k: int,
    fail_under: Mapping[str, float] | None,
    workers: int,
    custom_judges: str | Path | Sequence[CustomJudgeSpec] | None = None,
) -> _Plan:
    """Resolve the scorers, check the thresholds' names, load the suite, check the judge, build the target."""
    check_every_row_traced()
    judge_obj = get_judge(judge, concurrency=workers) if isinstance(judge, str) else judge
    specs = list(scorers or DEFAULT_SCORERS)
    scorer_list = resolve_scorers(specs, judge=judge_obj, k=k)
    loaded = EvalSuite.load(suite)
    records = loaded.to_records()
    custom = gather_specs(loaded.judges, custom_judges)
    custom_list = custom_scorers(custom, judge_obj, taken=[s.name for s in scorer_list])
    judged = [s for spec, s in zip(specs, scorer_list, strict=True) if _is_judge_name(spec)] + custom_list
    scorer_list += custom_list
    names = [s.name for s in scorer_list]
    check_threshold_names(fail_under, [*names, *(CONVERSATION_METRICS if has_turns(records) else ())])
    if judged:
        check_judge(judge_obj)
    return _Plan(
        suite=loaded,
        judge=judge_obj,
        scorers=scorer_list,
        names=names,
        judged=judged,
        only_ours=all(isinstance(spec, str) and not is_mlflow_name(spec) for spec in specs),
        predict_fn=play_conversations(make_predict_fn(target), records),
        records=records,
        custom=custom,
    )


def _is_judge_name(spec: ScorerSpec) -> bool:
    return isinstance(spec, str) and spec in JUDGE_SCORERS


def _spark_prepare(target: Target, *, master: str | None, k: int) -> SparkEval:
    from ragworks.scale.spark_eval import prepare

    return prepare(target, master=master, k=k)


def _evaluate(
    plan: _Plan, *, prefetch: bool, workers: int, spark: SparkEval | None = None
) -> EvaluationResult:
    """The fast path (when asked for and this MLflow has what it needs), else `evaluate(predict_fn=...)`."""
    import mlflow

    from ragworks.eval import _prefetch

    if spark is not None:  # its own errors say what failed (the Spark job, or evaluate)
        return spark.evaluate(plan, workers=workers)
    records = plan.records
    try:
        if prefetch and _prefetch.AVAILABLE:
            prepare = getattr(plan.judge, "prepare", None)
            return _prefetch.evaluate(
                plan.predict_fn,
                records,
                plan.scorers,
                ahead=plan.judged,
                prepare=prepare if callable(prepare) else None,
                workers=workers,
                unthrottled=plan.only_ours,
            )
        if prefetch:
            _prefetch.log_fallback_once()
        predict_fn = bounded(plan.predict_fn, workers)
        return mlflow.genai.evaluate(data=records, predict_fn=predict_fn, scorers=list(plan.scorers))
    except Exception as exc:
        raise EvalError(f"mlflow.genai.evaluate failed on suite {plan.suite.name!r}: {exc}") from exc


def _result(run_id: str, plan: _Plan, evaluation: EvaluationResult) -> SuiteResult:
    import pandas as pd

    frame = evaluation.result_df if evaluation.result_df is not None else pd.DataFrame()
    summary = summarise(frame, metric_names(plan.names, frame))
    table = _base_table(frame, plan.records)
    for column, values in summary.columns.items():
        table[column] = values
    conversations = _conversations(table, frame, plan)
    if conversations is not None:
        summary.metrics.update(conversations.metrics)
        summary.values.update(conversations.values)
    stats = getattr(getattr(plan.judge, "client", None), "stats", None)
    judge_stats = (
        {k: getattr(stats, k) for k in ("calls", "cache_hits", "retries", "failures")} if stats else {}
    )
    return SuiteResult(
        run_id=run_id,
        suite=plan.suite.name,
        metrics=summary.metrics,
        values=summary.values,
        table=table,
        judge=plan.judge.name,
        judge_stats=judge_stats,
        conversations=conversations,
    )


def _conversations(table: pd.DataFrame, frame: pd.DataFrame, plan: _Plan) -> ConversationSummary | None:
    """The conversation metrics and per-turn means, when the table has conversation turns."""
    if "turn" not in table:
        return None
    responses = frame["response"] if "response" in frame else [None] * len(frame)
    answers = [answer_of(r) for r in responses]
    return summarise_conversations(table, answers, plan.records, judge=plan.judge, metrics=plan.names)


def _judge_again(
    plan: _Plan, evaluation: EvaluationResult, result: SuiteResult, *, repeats: int, k: int, workers: int
) -> dict[str, RepeatStats]:
    """Judge every row `repeats - 1` more times with our judge scorers (see `ragworks.eval.repeats`)."""
    names = [s.name for s in plan.judged if s.name in result.table]
    if not names or evaluation.result_df is None:
        return {}
    first = {name: [as_float(v) for v in result.table[name]] for name in names}
    ours = [n for n in names if n in JUDGE_SCORERS]
    custom = [c for c in plan.custom if c.name in names]

    def make(i: int) -> list[Scorer]:
        twin = repeat_judge(plan.judge, i)
        return (resolve_scorers(ours, judge=twin, k=k) if ours else []) + custom_scorers(custom, twin)

    return judge_again(
        evaluation.result_df,
        plan.suite.to_records(),
        first,
        make,
        repeats=repeats,
        workers=workers,
    )


def _base_table(frame: pd.DataFrame, records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    table = pd.DataFrame(index=range(len(frame)))
    table["trace_id"] = list(frame["trace_id"]) if "trace_id" in frame else None
    table["state"] = [str(s) for s in frame["state"]] if "state" in frame else None
    requests = frame["request"] if "request" in frame else [r["inputs"] for r in records]
    responses = frame["response"] if "response" in frame else [None] * len(frame)
    questions = [question_of(r) for r in requests]
    conversations, turns = turn_columns(list(requests), records)
    keyed = pairing_inputs(list(requests), conversations, turns, questions)
    table[KEY_COLUMN] = row_keys(keyed)  # pairs this run's rows with a later run's
    if any(turns):
        table["conversation"], table["turn"] = conversations, turns
    table["question"] = questions
    table["answer"] = [answer_of(r)[:2000] for r in responses]
    return table


def run_example_suite(
    agent: Target,
    *,
    judge: str | Judge = "offline",
    experiment: str | None = "ragworks-quickstart",
    **kwargs: Any,  # Any: run_suite's keyword arguments
) -> SuiteResult:
    """Run the shipped example suite (questions over the shipped docs) against an agent."""
    return run_suite(agent, example_suite(), judge=judge, experiment=experiment, **kwargs)


__all__ = [
    "BOOTSTRAP_SAMPLES",
    "MetricSummary",
    "PairedComparison",
    "PairedMetric",
    "RepeatStats",
    "ScorerSpec",
    "SuiteResult",
    "bootstrap_ci",
    "check_judge",
    "make_predict_fn",
    "resolve_scorers",
    "run_example_suite",
    "run_suite",
]
