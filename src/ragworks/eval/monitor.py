"""Live quality monitoring: the eval scorers on sampled production traces, window by window.

Each window (one pass) reads the experiment's traces newer than the watermark (less a lookback,
for traces stored after later ones), keeps the sampled ones (`sampled`: a hash of the trace id,
so a restart picks the same), skips those already scored, runs the scorers on the rest, logs each
result on its trace (`mlflow.log_feedback`, named by the scorer) and logs the window's mean and
95% bootstrap interval per scorer to the experiment's monitor run. Thresholds (`fail_under`) and
scorers in error fail a window; a window with no new trace to score passes with nothing to check.

Example:
    >>> monitor = Monitor("prod-agent", sample=0.1, fail_under={"faithfulness": 0.7})  # doctest: +SKIP
    >>> result = monitor.run_window()                                                # doctest: +SKIP
    >>> result.passed, result.metrics["faithfulness"].mean                           # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragworks.errors import ConfigError, EvalError
from ragworks.eval import _monitor_traces as T
from ragworks.eval._gate import check_threshold_names, judged_errors, threshold_failures
from ragworks.eval._monitor_run import MonitorRun, close_monitor_run, log_window, open_monitor_run
from ragworks.eval._stats import MetricSummary, as_float, bootstrap_ci
from ragworks.eval.judges import Judge, get_judge
from ragworks.eval.scorers import JUDGE_SCORERS, SCORER_NAMES, make_scorer

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Feedback, Trace
    from mlflow.genai.scorers import Scorer

logger = logging.getLogger(__name__)
MONITOR_SCORERS = ("answer_relevance", "faithfulness", "context_relevance")
"""The default scorers: the ones that need no expectations, which live traces rarely have."""
DEFAULT_LOOKBACK_S = 600.0
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_interval(text: str, *, option: str = "--every", zero: bool = False) -> float:
    """Seconds from `90`, `90s`, `5m`, `1.5h` or `1d` (`zero`: 0 is allowed too).

    Raises:
        ConfigError: the text is not a positive (or, with `zero`, zero) number with an optional unit.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", text.lower())
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else -1.0
    if not (seconds > 0 or (zero and seconds == 0)):
        kind = "a duration" if zero else "a positive duration"
        raise ConfigError(f"{option} {text!r}: write {kind} such as 30s, 5m or 1h.")
    return seconds


def check_sample(rate: float, *, shown: str | None = None) -> float:
    """The sample rate, refused unless it is in (0, 1] (`shown`: the text it was parsed from)."""
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0 < rate <= 1):
        given = shown if shown is not None else str(rate)
        raise ConfigError(f"--sample {given}: give the share of traces to score, in (0, 1], e.g. 0.1.")
    return float(rate)


def parse_sample(text: str) -> float:
    """The `--sample` text as a rate in (0, 1]."""
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    return check_sample(rate, shown=text)


def check_scorer_names(names: Sequence[str]) -> list[str]:
    """The scorer names, refused (with a suggestion) when one is not a ragworks scorer."""
    for name in names:
        if name not in SCORER_NAMES:
            close = difflib.get_close_matches(name, SCORER_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"Unknown scorer {name!r}{hint}. Available: {', '.join(SCORER_NAMES)}.")
    return list(dict.fromkeys(names))


@dataclass(slots=True, kw_only=True)
class WindowResult:
    """One monitor window: what it read and scored, each scorer's summary, and the verdict."""

    window: int
    run_id: str
    counts: dict[str, int]
    """read (trace infos read), sampled, already (sampled, scored before), not_ok (sampled, the
    request failed or is still running: not graded), scored (graded in this window), gone
    (deleted between being read and being scored: skipped)."""
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    """Thresholds that did not hold."""
    errors: list[str] = field(default_factory=list)
    """Scorers with traces in error, one line each."""
    allow_errors: bool = False

    @property
    def passed(self) -> bool:
        """True when every threshold held and (unless allowed) no scorer erred."""
        return not self.failures and (self.allow_errors or not self.errors)

    def summary(self) -> str:
        """A few plain-text lines: the counts, one line per scorer, the verdict."""
        c = self.counts
        gone = f", {c['gone']} deleted meanwhile" if c.get("gone") else ""
        lines = [
            f"Window {self.window}: scored {c['scored']} traces "
            f"({c['sampled']} sampled of {c['read']} read, {c['already']} scored before, "
            f"{c['not_ok']} failed or unfinished{gone})"
        ]
        for name, m in self.metrics.items():
            value = f"{m.mean:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]" if m.n else "no value"
            lines.append(f"  {name:<18} {value}  n={m.n} errors={m.errors}")
        if not c["scored"]:
            lines.append("  no new sampled trace to score: thresholds not checked")
        verdict = "PASSED" if self.passed else "FAILED: " + "; ".join(self.failures + self.errors)
        return "\n".join([*lines, verdict])


@dataclass(slots=True)
class _Tally:
    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, feedback: Feedback) -> None:
        error = feedback.error
        if error is not None:
            message = getattr(error, "error_message", None) or str(error)
            self.errors.setdefault(feedback.name, []).append(message)
            return
        value = as_float(feedback.value)
        if value is None:
            self.errors.setdefault(feedback.name, []).append(f"not a number: {feedback.value!r}")
        else:
            self.values.setdefault(feedback.name, []).append(value)

    def summaries(self, order: Sequence[str]) -> dict[str, MetricSummary]:
        out = {}
        for name in [*order, *sorted((self.values.keys() | self.errors.keys()) - set(order))]:
            numbers, errors = self.values.get(name, []), self.errors.get(name, [])
            if not numbers and not errors:
                continue  # the scorer had nothing to grade on any trace (e.g. no expectations)
            low, high = bootstrap_ci(numbers)
            mean = sum(numbers) / len(numbers) if numbers else float("nan")
            out[name] = MetricSummary(
                name=name, mean=mean, ci_low=low, ci_high=high, n=len(numbers),
                errors=len(errors), first_error=errors[0] if errors else "",
            )  # fmt: skip
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class _Scored:
    """One trace's new feedbacks, the scorers it had before, and the scorers just run on it."""

    trace_id: str
    feedbacks: list[Feedback]
    before: set[str]
    ran: set[str]
    gone: bool = False
    """The trace was deleted (e.g. by retention) after it was selected."""


class Monitor:
    """Scores an experiment's sampled production traces, one window per `run_window()` call.

    Every check that needs no trace (sample rate, scorer and threshold names, the experiment, a
    judge's key and endpoint) runs in the constructor, before anything is scored or logged.
    """

    def __init__(
        self,
        experiment: str,
        *,
        sample: float = 0.1,
        scorers: Sequence[str] | None = None,
        judge: str | Judge = "offline",
        k: int = 5,
        fail_under: Mapping[str, float] | None = None,
        allow_errors: bool = False,
        concurrency: int = 8,
        lookback_s: float = DEFAULT_LOOKBACK_S,
        max_traces: int | None = None,
    ) -> None:
        self.sample = check_sample(sample)
        self.names = check_scorer_names(scorers or MONITOR_SCORERS)
        check_threshold_names(fail_under, self.names)
        self.fail_under = dict(fail_under or {})
        self.allow_errors = allow_errors
        self.concurrency = max(1, concurrency)
        self.lookback_ms = int(lookback_s * 1000)
        self.max_traces = max_traces
        self.judge = get_judge(judge, concurrency=self.concurrency) if isinstance(judge, str) else judge
        self.scorers: list[Scorer] = [make_scorer(n, judge=self.judge, k=k) for n in self.names]
        self.client, self.experiment_id = _experiment(experiment)
        self._check_judge()
        self.run: MonitorRun = open_monitor_run(self.client, self.experiment_id, tags=self._tags())

    def _check_judge(self) -> None:
        if not any(n in JUDGE_SCORERS for n in self.names):
            return
        check = getattr(self.judge, "check", None)
        if callable(check):
            check()  # raises ConfigError / EvalError: no key, an endpoint that does not answer
        prepare = getattr(self.judge, "prepare", None)
        if callable(prepare):
            prepare()  # its client is created here, not on a scoring thread

    def _tags(self) -> dict[str, str]:
        return {
            "ragworks.monitor.sample": str(self.sample),
            "ragworks.monitor.scorers": ",".join(self.names),
            "ragworks.monitor.judge": self.judge.name,
        }

    def run_window(self) -> WindowResult:
        """Score the new sampled traces, log their assessments and the window's aggregates.

        Raises:
            EvalError: the tracking store could not be read, or refused an assessment or the
                window's metrics (the watermark then stays, so the next window tries those traces again).
        """
        counts = {"read": 0, "sampled": 0, "already": 0, "not_ok": 0, "scored": 0, "gone": 0}
        try:
            todo, newest = self._select(counts)
        except Exception as exc:
            raise EvalError(f"Could not read the traces of experiment {self.experiment_id}: {exc}") from exc
        tally = _Tally()
        for scored in self._score(todo):
            if scored.gone or not self._store(scored):
                counts["gone"] += 1
                continue
            for feedback in scored.feedbacks:
                tally.add(feedback)
            counts["scored"] += 1
        result = WindowResult(
            window=self.run.windows, run_id=self.run.run_id, counts=counts,
            metrics=tally.summaries(self.names), allow_errors=self.allow_errors,
        )  # fmt: skip
        if counts["scored"]:
            result.failures = threshold_failures(result.metrics, self.fail_under)
            result.errors = judged_errors(result.metrics, list(result.metrics))
        try:
            log_window(self.client, self.run, result.metrics, counts, watermark_ms=newest)
        except Exception as exc:
            where = f"monitor window {result.window} to run {self.run.run_id}"
            raise EvalError(f"Could not log {where}: {exc}") from exc
        return result

    def _select(self, counts: dict[str, int]) -> tuple[list[tuple[str, set[str]]], int]:
        """The sampled traces still to score (id, scorers done) and the newest timestamp read."""
        since = max(0, self.run.watermark_ms - self.lookback_ms)
        todo: list[tuple[str, set[str]]] = []
        newest = self.run.watermark_ms
        for info in T.read_since(self.client, self.experiment_id, since):
            counts["read"] += 1
            newest = max(newest, int(info.info.timestamp_ms))
            if not T.sampled(info.info.trace_id, self.sample):
                continue
            counts["sampled"] += 1
            done = T.done_scorers(info)
            if not set(self.names) - done:
                counts["already"] += 1
            elif not T.is_finished_ok(info):
                counts["not_ok"] += 1
            else:
                todo.append((info.info.trace_id, done))
                if self.max_traces is not None and len(todo) >= self.max_traces:
                    break  # the rest waits for the next window: the watermark stops here
        return todo, newest

    def _score(self, todo: list[tuple[str, set[str]]]) -> Iterator[_Scored]:
        """Each trace's feedbacks from the scorers it has not had, `concurrency` traces at once."""

        def one(item: tuple[str, set[str]]) -> _Scored:
            trace_id, before = item
            try:
                trace = self.client.get_trace(trace_id)
            except Exception as exc:
                if not _is_gone(exc):
                    raise
                return _Scored(trace_id=trace_id, feedbacks=[], before=before, ran=set(), gone=True)
            scorers = [s for s in self.scorers if s.name not in before]
            feedbacks = [f for s in scorers for f in _run_scorer(s, trace)]
            ran = {s.name for s in scorers}
            return _Scored(trace_id=trace_id, feedbacks=feedbacks, before=before, ran=ran)

        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
            yield from pool.map(one, todo)

    def _store(self, scored: _Scored) -> bool:
        """Log the feedbacks on the trace (they mark their scorers done); a scorer that graded
        nothing is marked in the trace's tag instead, so it does not run again. False when the
        trace was deleted meanwhile."""
        import mlflow

        try:
            for fb in scored.feedbacks:
                mlflow.log_feedback(
                    trace_id=scored.trace_id,
                    name=fb.name,
                    value=None if fb.error is not None else fb.value,
                    source=fb.source,
                    error=fb.error,
                    rationale=fb.rationale,
                    metadata={**(fb.metadata or {}), T.MONITOR_KEY: self.run.run_id},
                )
            if scored.ran - {fb.name for fb in scored.feedbacks}:
                done = ",".join(sorted(scored.before | scored.ran))
                self.client.set_trace_tag(scored.trace_id, T.SCORED_TAG, done)
        except Exception as exc:
            if _is_gone(exc):
                return False
            where = f"trace {scored.trace_id}"
            raise EvalError(f"Could not store the monitor's assessments on {where}: {exc}") from exc
        return True

    def close(self, *, status: str = "FINISHED") -> None:
        """End the monitor run (a later monitor reopens it and carries on from its watermark)."""
        close_monitor_run(self.client, self.run, status=status)


def _is_gone(exc: Exception) -> bool:
    """True for MLflow's answer about a trace that does not exist (any more)."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _run_scorer(scorer: Scorer, trace: Trace) -> list[Feedback]:
    """The scorer's feedbacks on one trace; an exception becomes an error feedback, never a score."""
    from mlflow.entities import AssessmentError, AssessmentSource, AssessmentSourceType, Feedback

    inputs, outputs = T.inputs_outputs(trace)
    given = {"inputs": inputs, "outputs": outputs, "expectations": T.expectations_of(trace), "trace": trace}
    try:
        # A scorer takes only the arguments its function names (as MLflow's harness passes them).
        accepted = inspect.signature(scorer.__call__).parameters
        got: Any = scorer(**{k: v for k, v in given.items() if k in accepted})
    except Exception as exc:  # one trace's failure is an error on it, never the end of the window
        error = AssessmentError(error_code="SCORER_ERROR", error_message=f"{type(exc).__name__}: {exc}")
        source = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id="ragworks.monitor")
        return [Feedback(name=scorer.name, source=source, error=error)]
    if got is None:
        return []
    if isinstance(got, Feedback):
        return [got]
    if isinstance(got, list):
        return [f for f in got if isinstance(f, Feedback)]
    source = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=f"ragworks.{scorer.name}")
    return [Feedback(name=scorer.name, value=got, source=source)]


def _experiment(name: str) -> tuple[MlflowClient, str]:
    """The tracking client and the experiment's id; refused when it is unknown or has no trace."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as exc:
        raise EvalError(f"Cannot read the tracking store {mlflow.get_tracking_uri()}: {exc}") from exc
    if experiment is None:
        raise ConfigError(
            f"Experiment {name!r} does not exist in {mlflow.get_tracking_uri()}: "
            "check --experiment and MLFLOW_TRACKING_URI."
        )
    if not client.search_traces(locations=[experiment.experiment_id], max_results=1, include_spans=False):
        raise ConfigError(
            f"Experiment {name!r} has no traces to monitor: serve the agent with --experiment {name} first."
        )
    return client, experiment.experiment_id


def watch(
    monitor: Monitor,
    *,
    every: float | None,
    windows: int | None = None,
    on_window: Callable[[WindowResult], None] = lambda _r: None,
) -> WindowResult:
    """Run windows (one when `every` is None, else one every `every` seconds, `windows` at most)
    until one fails; return the last. The monitor run is ended on the way out."""
    status = "FINISHED"
    try:
        count = 0
        while True:
            start = time.monotonic()
            result = monitor.run_window()
            on_window(result)
            count += 1
            if every is None or not result.passed or (windows is not None and count >= windows):
                return result
            time.sleep(max(0.0, every - (time.monotonic() - start)))
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception:
        status = "FAILED"
        raise
    finally:
        monitor.close(status=status)


__all__ = [
    "DEFAULT_LOOKBACK_S",
    "MONITOR_SCORERS",
    "Monitor",
    "WindowResult",
    "check_sample",
    "check_scorer_names",
    "parse_interval",
    "parse_sample",
    "watch",
]
