"""What a Spark executor does for `ragworks eval --spark`: predict a partition's rows and score them.

The agent (or the logged model) and the offline judge are built once per Python worker and reused
by every partition it runs. Each row is predicted the way the local run predicts it
(`ragworks.eval._prefetch`: MLflow's predict_fn wrapper inside its eval autologging), its trace is
captured in memory (`_trace_capture`), and the scorers that need no LLM run on it here. A row comes
back as its trace (MLflow's JSON), its prediction error, and a pickle of its outputs and scores.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Trace
    from mlflow.genai.scorers import Scorer

logger = logging.getLogger(__name__)

RESULT_SCHEMA = "row long, trace string, error string, payload binary"
"""The Spark schema of a scored row: its index, trace JSON, prediction error, pickled outputs + scores."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorSpec:
    """Everything an executor needs to rebuild the agent and the scorers it runs (picklable)."""

    target: str | dict[str, Any]
    """A model URI, or the agent config as JSON with absolute paths (Any: JSON values)."""
    scorers: tuple[str, ...]
    """Our scorers' names that run here (no LLM judge)."""
    judge: str
    """An offline judge's name."""
    thresholds: dict[str, float] | None
    """Calibrated thresholds the judge decides pass / fail at, if any."""
    k: int
    workers: int
    """Rows predicted at once within a partition."""
    tracking_uri: str
    """The driver's tracking URI: model URIs resolve against it (nothing is written to it)."""
    traced: bool | None = None
    """Whether the agent traces itself, as the driver found (`_trace_check`); None: each partition checks."""
    run_id: str = ""
    """The MLflow run: a worker reuses what it built within one run only (an index may change)."""

    def key(self) -> str:
        """What identifies the built agent and scorers, for reuse across partitions."""
        parts = [self.run_id, self.target, self.scorers, self.judge, self.thresholds, self.k]
        return json.dumps(parts, sort_keys=True)


@dataclass(frozen=True, slots=True)
class _Built:
    predict_fn: Callable[..., object]
    scorers: list[Scorer]


_BUILT: dict[str, _Built] = {}
_BUILD_LOCK = threading.Lock()


def _built(spec: ExecutorSpec) -> _Built:
    """The agent's predict_fn and the scorers, built on this worker's first partition only."""
    from ragworks.eval._targets import make_predict_fn
    from ragworks.eval._thresholds import ThresholdJudge
    from ragworks.eval.judges import Judge, get_judge
    from ragworks.eval.scorers import make_scorer

    key = spec.key()
    with _BUILD_LOCK:
        if key not in _BUILT:
            judge: Judge = get_judge(spec.judge)
            if spec.thresholds is not None:
                judge = ThresholdJudge(judge, spec.thresholds)
            scorers = [make_scorer(name, judge=judge, k=spec.k) for name in spec.scorers]
            _BUILT.clear()  # what an earlier run built is not reused
            _BUILT[key] = _Built(make_predict_fn(spec.target), scorers)
        return _BUILT[key]


def score_partition(spec: ExecutorSpec, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """`mapInPandas` body: each batch of (row, record JSON) becomes a batch of RESULT_SCHEMA rows."""
    import mlflow

    from ragworks.eval import _prefetch
    from ragworks.eval.conversations import play_conversations
    from ragworks.scale._trace_capture import captured_traces

    mlflow.set_tracking_uri(spec.tracking_uri)
    built = _built(spec)
    call: Callable[[dict[str, Any]], Any] | None = None
    with _prefetch.eval_autologging(), captured_traces() as captured:
        for batch in batches:
            import pandas as pd

            records = [json.loads(text) for text in batch["record"]]
            if call is None:  # the partition's turns are all of their conversations, in order
                call = _wrapped(play_conversations(built.predict_fn, records), spec.traced, records)
            one = _row_scorer(call, built.scorers, captured)
            with ThreadPoolExecutor(max(1, spec.workers), thread_name_prefix="ragworks-spark-eval") as pool:
                rows = list(pool.map(one, batch["row"], records))
            yield pd.DataFrame(rows, columns=["row", "trace", "error", "payload"])


def _wrapped(
    predict_fn: Callable[..., object], traced: bool | None, records: list[dict[str, Any]]
) -> Callable[[dict[str, Any]], Any]:
    """`predict_fn` as MLflow's `convert_predict_fn` wraps it, with the driver's answer on tracing."""
    import mlflow
    from mlflow.genai.utils.trace_utils import convert_predict_fn

    if traced is None:
        return convert_predict_fn(predict_fn=predict_fn, sample_input=records[0]["inputs"])
    call = predict_fn if traced else mlflow.trace(predict_fn)
    return lambda request: call(**request)


def _row_scorer(
    call: Callable[[dict[str, Any]], Any], scorers: list[Scorer], captured: Mapping[str, Trace] | None
) -> Callable[[int, dict[str, Any]], dict[str, object]]:
    from ragworks.eval._prefetch import _predict_one, _score_one

    def one(index: int, record: dict[str, Any]) -> dict[str, object]:
        row = _predict_one(call, record)
        trace = captured.get(row.trace_id) if captured is not None else None
        scores: dict[str, object] = {}
        if trace is not None:
            row.record["trace"] = trace
            scores = {s.name: _portable(_score_one(s, row)) for s in scorers}
        payload = pickle.dumps({"outputs": row.record.get("outputs"), "scores": scores})
        return {
            "row": int(index),
            "trace": trace.to_json() if trace is not None else None,
            "error": row.error,
            "payload": payload,
        }

    return one


def _portable(result: object) -> object:
    """A scorer's result as it can travel to the driver: an exception that does not pickle is re-made."""
    if not isinstance(result, Exception):
        return result
    try:
        pickle.dumps(result)
    except Exception:
        return RuntimeError(f"{type(result).__name__}: {result}")
    return result
