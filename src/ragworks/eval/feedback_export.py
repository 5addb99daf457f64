"""Turn traces that people gave feedback on into an eval suite (`ragworks eval export-feedback`).

Each trace with a `user_feedback` assessment (what `POST /v1/feedback` stores) becomes one row:
`inputs.question` is the question the trace's request asked, and the latest feedback decides the rest.
An approved answer (true, or a number at or above `min_rating`) becomes `expectations.expected_response`;
a rejected or unrated one gets no expectations (it is not a reference). Every row's tags keep the
label (`feedback`: positive / negative / rated), the value, the comment, the user, the trace id and
the answer that was given, so a person can review the file before it gates anything.

Example:
    >>> suite = export_feedback("production")          # doctest: +SKIP
    >>> write_suite(suite, "feedback.yaml")            # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Feedback, Trace

from ragworks.errors import EvalError
from ragworks.eval._extract import answer_of, question_of
from ragworks.eval.suite import Conversation, EvalRow, EvalSuite, Expectations

FEEDBACK_NAME = "user_feedback"
"""The assessment name `POST /v1/feedback` stores (ragworks.serving.feedback.FEEDBACK_NAME)."""
MAX_TAG_CHARS = 4000
"""Longest tag value written (MLflow caps trace tag values; answers can be long)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedSuite:
    """The suite and the facts its file header states."""

    suite: EvalSuite
    experiment: str
    traces: int
    positive: int
    negative: int
    rated: int


def _latest_feedback(trace: Trace) -> Feedback | None:
    """The newest valid `user_feedback` on the trace (a person may change their mind)."""
    found = [
        a
        for a in trace.info.assessments or []
        if isinstance(a, Feedback) and a.name == FEEDBACK_NAME and a.valid is not False and a.error is None
    ]
    return max(found, key=lambda a: a.create_time_ms or 0) if found else None


def _json(raw: Any) -> Any:  # Any: whatever JSON the agent's root span recorded
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _label(value: Any, min_rating: float | None) -> str:
    if isinstance(value, bool):
        return "positive" if value else "negative"
    if isinstance(value, (int, float)) and min_rating is not None:
        return "positive" if value >= min_rating else "negative"
    return "rated"


def _row(trace: Trace, feedback: Feedback, *, min_rating: float | None) -> EvalRow | None:
    """One suite row from a trace and its feedback (None when the trace recorded no question)."""
    question = question_of(_json(trace.data.request)).strip()
    if not question:
        return None
    answer = answer_of(_json(trace.data.response))
    value = feedback.value
    label = _label(value, min_rating)
    tags = {
        "feedback": label,
        "feedback_value": json.dumps(value),
        "feedback_user": feedback.source.source_id or "",
        "feedback_comment": feedback.rationale or "",
        "source_trace_id": trace.info.trace_id,
        "answer_given": answer,
    }
    expectations = Expectations(expected_response=answer) if label == "positive" and answer else None
    return EvalRow(
        inputs={"question": question},
        expectations=expectations,
        tags={k: v[:MAX_TAG_CHARS] for k, v in tags.items() if v},
    )


def _experiment_id(name: str) -> str:
    experiment = mlflow.MlflowClient().get_experiment_by_name(name)
    if experiment is None:
        raise EvalError(
            f"No MLflow experiment named {name!r} at {mlflow.get_tracking_uri()}: name the experiment the "
            "server traced into (ragworks serve --experiment) or set MLFLOW_TRACKING_URI."
        )
    return str(experiment.experiment_id)


def traces_with_feedback(experiment: str, *, max_traces: int = 1000) -> list[Trace]:
    """The experiment's traces that carry a `user_feedback` assessment, newest first."""
    where = _experiment_id(experiment)
    # `locations` replaced `experiment_ids` (deprecated since); older MLflow releases know only the latter.
    newer = "locations" in inspect.signature(mlflow.search_traces).parameters
    scope = "locations" if newer else "experiment_ids"
    return mlflow.search_traces(
        **{scope: [where]},
        filter_string=f"feedback.`{FEEDBACK_NAME}` IS NOT NULL",
        max_results=max_traces,
        order_by=["timestamp_ms DESC"],
        return_type="list",
    )


def export_feedback(
    experiment: str, *, min_rating: float | None = None, max_traces: int = 1000
) -> ExportedSuite:
    """Build a suite from the experiment's traces with feedback.

    Raises:
        EvalError: the experiment does not exist, or none of its traces has feedback.
    """
    rows: list[EvalRow | Conversation] = []
    for trace in traces_with_feedback(experiment, max_traces=max_traces):
        feedback = _latest_feedback(trace)
        row = _row(trace, feedback, min_rating=min_rating) if feedback else None
        if row is not None:
            rows.append(row)
    if not rows:
        raise EvalError(
            f"No traces with feedback ({FEEDBACK_NAME}) in the experiment {experiment!r}: post some with "
            "POST /v1/feedback (or the chat page's buttons) first."
        )
    labels = [row.tags["feedback"] for row in rows if isinstance(row, EvalRow)]
    suite = EvalSuite(
        name=f"feedback-{experiment}",
        description=f"Questions people gave feedback on in the MLflow experiment {experiment!r}.",
        rows=rows,
    )
    return ExportedSuite(
        suite=suite,
        experiment=experiment,
        traces=len(rows),
        positive=labels.count("positive"),
        negative=labels.count("negative"),
        rated=labels.count("rated"),
    )


def write_suite(exported: ExportedSuite, path: str | Path, *, min_rating: float | None = None) -> Path:
    """Write the suite as YAML, with a header saying what was exported and how rows were made."""
    path = Path(path)
    rating = f"numbers >= {min_rating:g} count as approval" if min_rating is not None else "numbers are rated"
    header = [
        f"Exported by `ragworks eval export-feedback` on {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"from the MLflow experiment {exported.experiment!r} at {mlflow.get_tracking_uri()}:",
        f"{exported.traces} traces with feedback ({exported.positive} positive, {exported.negative} "
        f"negative, {exported.rated} rated; the latest feedback of each trace; {rating}).",
        "inputs.question: the question of the trace's request. expectations.expected_response: the answer",
        "given, only where a person approved it. tags: the feedback (label, value, comment, user), the",
        "trace id and the answer given. Review before gating on it.",
    ]
    body = yaml.safe_dump(
        exported.suite.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"# {line}\n" for line in header) + body, encoding="utf-8")
    return path
