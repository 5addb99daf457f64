"""Run a suite against an agent through `mlflow.genai.evaluate` and summarise it in one MLflow run.

The run gets each metric's mean (MLflow's `<name>/mean`) plus a 95% bootstrap interval
(`<name>/ci_low`, `<name>/ci_high`), row and error counts, per-row assessments on the traces, a
results table (`eval_results.json`) and a report (`eval_report.html` / `.md`). Thresholds
(`fail_under`) and a baseline run decide pass / fail.

Example:
    >>> result = run_suite("agent.yaml", "suite.yaml", fail_under={"faithfulness": 0.8})  # doctest: +SKIP
    >>> result.passed, result.metrics["faithfulness"].mean                                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragworks.config import AgentConfig
from ragworks.errors import EvalError
from ragworks.eval._extract import answer_of, question_of
from ragworks.eval.judges import Judge, get_judge
from ragworks.eval.scorers import DEFAULT_SCORERS, JUDGE_SCORERS, SCORER_NAMES, make_scorer
from ragworks.eval.suite import EvalSuite, example_suite

logger = logging.getLogger(__name__)
Target = Any  # an agent with .predict, a model URI, an AgentConfig / dict / YAML path, or a callable
ScorerSpec = Any  # a scorer name, or any mlflow Scorer (built-ins included)
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSummary:
    """One metric over the suite: mean, 95% bootstrap interval, rows scored and rows in error."""

    name: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    errors: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Regression:
    """A metric whose mean fell below the baseline run's interval."""

    metric: str
    baseline: float
    current: float
    bound: float
    """The value the current mean fell below (the baseline's lower 95% bound)."""


@dataclass(slots=True, kw_only=True)
class SuiteResult:
    """What a suite run produced; `passed` is False on a failed threshold or a regression."""

    run_id: str
    suite: str
    metrics: dict[str, MetricSummary]
    values: dict[str, list[float]]
    """Per-row values of each metric, for histograms."""
    table: Any  # Any: a pandas DataFrame, one row per suite row
    failures: list[str] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)
    judge: str = ""
    judge_stats: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    report: str = ""
    """The report's artifact path in the run."""

    @property
    def passed(self) -> bool:
        """True when every threshold held and nothing regressed against the baseline."""
        return not self.failures and not self.regressions

    def summary(self) -> str:
        """A plain-text table of the metrics and the verdict."""
        from ragworks.eval.report import summary_table

        return summary_table(self)


def bootstrap_ci(
    values: Sequence[float], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def _to_request(inputs: dict[str, Any]) -> dict[str, Any]:
    """A Responses request from suite inputs: a question becomes one user message (Any: JSON)."""
    if "input" in inputs:
        return inputs
    if "messages" in inputs:
        return {"input": inputs["messages"], **{k: v for k, v in inputs.items() if k != "messages"}}
    extra = {k: v for k, v in inputs.items() if k != "question"}
    return {"input": [{"role": "user", "content": inputs["question"]}], **extra}


def _plain(output: Any) -> Any:
    """Pydantic responses as plain dicts, so MLflow stores and scorers read JSON (Any: JSON)."""
    if hasattr(output, "model_dump"):
        return output.model_dump(exclude_none=True)
    return output


def make_predict_fn(target: Target) -> Callable[..., Any]:
    """A predict_fn(**inputs) -> plain dict for mlflow.genai.evaluate (Any: the agent's JSON output)."""
    call = _resolve_target(target)

    def predict_fn(**inputs: Any) -> Any:
        return _plain(call(_to_request(inputs)))

    return predict_fn


def _is_model_uri(target: str) -> bool:
    return target.startswith(("models:/", "runs:/", "m-")) or ("://" in target and not Path(target).exists())


def _resolve_target(target: Target) -> Callable[[dict[str, Any]], Any]:
    if isinstance(target, str) and _is_model_uri(target):
        import mlflow

        uri = f"models:/{target}" if target.startswith("m-") else target
        return mlflow.pyfunc.load_model(uri).predict
    if isinstance(target, (str, Path, dict, AgentConfig)):
        from ragworks.agents import build_agent

        agent: Any = build_agent(target)  # Any: predict takes a request dict or a ResponsesAgentRequest
        return agent.predict
    if hasattr(target, "predict"):
        return target.predict
    if callable(target):
        return target
    raise EvalError(f"Cannot evaluate {type(target).__name__}: pass an agent, a model URI or a config.")


def resolve_scorers(specs: Sequence[ScorerSpec] | None, *, judge: Judge, k: int) -> list[Any]:
    """Scorer names become our scorers (sharing `judge`); Scorer objects pass through unchanged."""
    out = []
    for spec in specs or DEFAULT_SCORERS:
        if isinstance(spec, str):
            if spec not in SCORER_NAMES:
                raise EvalError(f"Unknown scorer {spec!r}. Available: {', '.join(SCORER_NAMES)}.")
            out.append(make_scorer(spec, judge=judge, k=k))
        else:
            out.append(spec)
    return out


@contextlib.contextmanager
def _scoped_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _eval_env(workers: int, *, own_scorers_only: bool) -> dict[str, str]:
    # MLflow sizes its predict and score pools from MLFLOW_GENAI_EVAL_MAX_WORKERS. Its scorer rate
    # limiter starts at 10 calls/s per scorer ("auto"), a cap of its own on top of our judge's bound
    # and backoff; it is turned off only when every scorer is ours and the caller did not set it.
    env = {"MLFLOW_GENAI_EVAL_MAX_WORKERS": str(workers)}
    if own_scorers_only and "MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT" not in os.environ:
        env["MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT"] = "0"
    return env


def _is_judge_name(spec: ScorerSpec) -> bool:
    return isinstance(spec, str) and spec in JUDGE_SCORERS


def _evaluate(
    predict_fn: Callable[..., Any],
    suite: EvalSuite,
    scorer_list: Sequence[Any],
    *,
    prefetched: Sequence[Any],
    judge: Judge,
    workers: int,
) -> Any:
    """Predict and judge in our pools (see `_prefetch`) while MLflow logs and aggregates.

    Any: mlflow's EvaluationResult."""
    import mlflow

    from ragworks.eval import _prefetch

    if not _prefetch.supported():
        logger.info("This MLflow lacks the evaluate internals the fast path reuses; using predict_fn.")
        return mlflow.genai.evaluate(
            data=suite.to_records(), predict_fn=predict_fn, scorers=list(scorer_list)
        )
    from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation

    prepare = getattr(judge, "prepare", None)
    if prepare is not None and prefetched:
        prepare()  # the judge's client or model imports its modules here, not on a judge thread
    ahead = {id(s) for s in prefetched}
    with (
        configure_autologging_for_evaluation(enable_tracing=True),
        _prefetch.JudgePool(prefetched, workers=workers) as judging,
    ):
        rows = _prefetch.predict_rows(predict_fn, suite.to_records(), workers=workers, on_row=judging.submit)
        scorers = [_prefetch.memoised(s, judging) if id(s) in ahead else s for s in scorer_list]
        judging.pause()  # evaluate first sets up autologging: no judge job may run then (JudgePool)
        with _prefetch.batched_trace_refresh():
            return mlflow.genai.evaluate(data=[r.record for r in rows], scorers=scorers)


def run_suite(
    target: Target,
    suite: EvalSuite | str | Path,
    *,
    scorers: Sequence[ScorerSpec] | None = None,
    judge: str | Judge = "offline",
    k: int = 5,
    fail_under: Mapping[str, float] | None = None,
    baseline_run_id: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    concurrency: int = 8,
    report_format: str = "html",
    prefetch: bool = True,
) -> SuiteResult:
    """Evaluate `target` on `suite` in one MLflow run and return the summary.

    Args:
        target: an agent (anything with `.predict(request)`), a model URI (`models:/...`, `runs:/...`),
            an AgentConfig / dict / YAML path (built with `build_agent`), or a callable(request).
        suite: an EvalSuite, a YAML / JSONL path, or `mlflow-dataset:<name or id>`.
        scorers: names (SCORER_NAMES) and / or MLflow Scorer objects; default DEFAULT_SCORERS.
        judge: the judge name for our judge-based scorers (see `get_judge`), or a Judge.
        k: the cut-off of the retrieval metrics.
        fail_under: minimum means, e.g. `{"faithfulness": 0.8}`.
        baseline_run_id: a previous run; metrics whose mean falls below its 95% interval regress.
        experiment: MLflow experiment name (default: the active one).
        run_name: the MLflow run name (default: the suite name).
        concurrency: rows predicted and scored at once, and judge calls in flight.
        report_format: `html` (with a score histogram per metric) or `md`.
        prefetch: predict every row and run our judge scorers in our own pools first, then hand
            `mlflow.genai.evaluate` the traces (see `ragworks.eval._prefetch`); False passes
            `predict_fn` to `evaluate` and lets its harness do both (several times slower).

    Raises:
        EvalError: the suite, the target or a scorer name is invalid, or MLflow failed.
    """
    import mlflow

    suite = EvalSuite.load(suite)
    judge_obj = get_judge(judge, concurrency=concurrency) if isinstance(judge, str) else judge
    specs = list(scorers or DEFAULT_SCORERS)
    scorer_list = resolve_scorers(specs, judge=judge_obj, k=k)
    # Our judge scorers are the ones worth running ahead: they wait on the judge, not the CPU.
    judged = [s for spec, s in zip(specs, scorer_list, strict=True) if _is_judge_name(spec)]
    predict_fn = make_predict_fn(target)
    if experiment:
        mlflow.set_experiment(experiment)
    own_only = prefetch and all(isinstance(spec, str) for spec in specs)
    env = _eval_env(concurrency, own_scorers_only=own_only)
    start = time.perf_counter()
    with mlflow.start_run(run_name=run_name or suite.name) as run, _scoped_env(env):
        try:
            if prefetch:
                evaluation = _evaluate(
                    predict_fn, suite, scorer_list, prefetched=judged, judge=judge_obj, workers=concurrency
                )
            else:
                evaluation = mlflow.genai.evaluate(
                    data=suite.to_records(), predict_fn=predict_fn, scorers=scorer_list
                )
        except Exception as exc:
            raise EvalError(f"mlflow.genai.evaluate failed on suite {suite.name!r}: {exc}") from exc
        result = _summarise(run.info.run_id, suite, evaluation, judge_obj, scorer_list)
        result.elapsed_s = time.perf_counter() - start
        _judge_checks(result, fail_under, baseline_run_id)
        _log(result, suite, scorer_list, k=k, fail_under=fail_under, report_format=report_format)
    return result


def _metric_names(scorer_list: Sequence[Any], frame: Any) -> list[str]:
    names = [s.name for s in scorer_list]
    extra = [
        c[: -len("/value")]
        for c in frame.columns
        if c.endswith("/value") and c[: -len("/value")] not in names
    ]
    return names + [n for n in extra if not n.startswith("expected_")]


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and np.isnan(value)):
        return float(value)
    if isinstance(value, str) and value.lower() in {"yes", "no"}:
        return float(value.lower() == "yes")
    return None


def _summarise(
    run_id: str, suite: EvalSuite, evaluation: Any, judge: Judge, scorer_list: Sequence[Any]
) -> SuiteResult:
    import pandas as pd

    frame = evaluation.result_df if evaluation.result_df is not None else pd.DataFrame()
    metrics, values, table = {}, {}, _base_table(frame, suite)
    for name in _metric_names(scorer_list, frame):
        column = frame.get(f"{name}/value", pd.Series([None] * len(frame)))
        errors = frame.get(f"{name}/error_message", pd.Series([None] * len(frame)))
        row_values = [_as_float(v) for v in column]
        numbers = [v for v in row_values if v is not None]
        n_errors = int(sum(isinstance(e, str) and bool(e) for e in errors))
        table[name] = row_values
        table[f"{name}/rationale"] = list(frame.get(f"{name}/rationale", pd.Series([None] * len(frame))))
        table[f"{name}/error"] = list(errors)
        if numbers:
            low, high = bootstrap_ci(numbers)
            metrics[name] = MetricSummary(
                name=name,
                mean=float(np.mean(numbers)),
                ci_low=low,
                ci_high=high,
                n=len(numbers),
                errors=n_errors,
            )
            values[name] = numbers
        elif n_errors:
            metrics[name] = MetricSummary(
                name=name, mean=float("nan"), ci_low=float("nan"), ci_high=float("nan"), n=0, errors=n_errors
            )
    stats = getattr(getattr(judge, "client", None), "stats", None)
    judge_stats = (
        {k: getattr(stats, k) for k in ("calls", "cache_hits", "retries", "failures")} if stats else {}
    )
    return SuiteResult(
        run_id=run_id,
        suite=suite.name,
        metrics=metrics,
        values=values,
        table=table,
        judge=judge.name,
        judge_stats=judge_stats,
    )


def _base_table(frame: Any, suite: EvalSuite) -> Any:
    import pandas as pd

    table = pd.DataFrame(index=range(len(frame)))
    table["trace_id"] = list(frame["trace_id"]) if "trace_id" in frame else None
    requests = frame["request"] if "request" in frame else [r.inputs for r in suite.rows]
    responses = frame["response"] if "response" in frame else [None] * len(frame)
    table["question"] = [question_of(r) for r in requests]
    table["answer"] = [answer_of(r)[:2000] for r in responses]
    return table


def _judge_checks(result: SuiteResult, fail_under: Mapping[str, float] | None, baseline: str | None) -> None:
    for name, minimum in (fail_under or {}).items():
        summary = result.metrics.get(name)
        if summary is None or summary.n == 0:
            result.failures.append(f"{name}: no value was computed (threshold {minimum})")
        elif summary.mean < minimum:
            result.failures.append(f"{name}: mean {summary.mean:.3f} < {minimum}")
    if baseline:
        result.regressions.extend(compare_to_baseline(result.metrics, baseline))


def compare_to_baseline(metrics: Mapping[str, MetricSummary], baseline_run_id: str) -> list[Regression]:
    """Metrics whose mean fell below the baseline's lower 95% bound (or, without one, whose upper
    bound fell below the baseline mean)."""
    import mlflow

    try:
        old = mlflow.get_run(baseline_run_id).data.metrics
    except Exception as exc:
        raise EvalError(f"Cannot read baseline run {baseline_run_id!r}: {exc}") from exc
    regressions = []
    for name, summary in metrics.items():
        if summary.n == 0 or f"{name}/mean" not in old:
            continue
        before = old[f"{name}/mean"]
        bound = old.get(f"{name}/ci_low")
        current = summary.mean if bound is not None else summary.ci_high
        bound = before if bound is None else bound
        if current < bound - 1e-12:
            regressions.append(Regression(metric=name, baseline=before, current=summary.mean, bound=bound))
    return regressions


def _log(
    result: SuiteResult,
    suite: EvalSuite,
    scorer_list: Sequence[Any],
    *,
    k: int,
    fail_under: Mapping[str, float] | None,
    report_format: str,
) -> None:
    import mlflow

    from ragworks.eval.report import render

    logged: dict[str, float] = {"eval/rows": float(len(suite.rows)), "eval/elapsed_s": result.elapsed_s}
    for name, m in result.metrics.items():
        logged.update(
            {
                f"{name}/ci_low": m.ci_low,
                f"{name}/ci_high": m.ci_high,
                f"{name}/n": float(m.n),
                f"{name}/errors": float(m.errors),
            }
        )
    for key, value in result.judge_stats.items():
        logged[f"judge/{key}"] = float(value)
    mlflow.log_metrics({k2: v for k2, v in logged.items() if not np.isnan(v)})
    mlflow.log_params(
        {
            "suite": suite.name,
            "judge": result.judge,
            "k": k,
            "scorers": ",".join(s.name for s in scorer_list)[:500],
        }
    )
    mlflow.set_tags(
        {
            "ragworks.eval.suite": suite.name,
            "ragworks.eval.passed": str(result.passed).lower(),
            "ragworks.eval.fail_under": ",".join(f"{n}={v}" for n, v in (fail_under or {}).items()),
        }
    )
    mlflow.log_table(data=result.table, artifact_file="eval_results.json")
    result.report = "eval_report.md" if report_format == "md" else "eval_report.html"
    mlflow.log_text(render(result, fmt=report_format), result.report)


def run_example_suite(
    agent: Target,
    *,
    judge: str | Judge = "offline",
    experiment: str | None = "ragworks-quickstart",
    **kwargs: Any,
) -> SuiteResult:
    """Run the shipped example suite (questions over the shipped docs) against an agent."""
    return run_suite(agent, example_suite(), judge=judge, experiment=experiment, **kwargs)
