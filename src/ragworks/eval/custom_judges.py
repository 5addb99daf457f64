"""Custom judges run by the LLM judge: one MLflow scorer per declared judge.

Each judgement is one call through the judge's `JudgeClient` (its cache, retries, concurrency
bound and counters), asking for a JSON schema `response_format` (JSON mode where the endpoint
refuses it) and validating the reply with pydantic; a malformed reply is retried, then the row's
assessment is an error, never a score. The score is normalised to [0, 1] (pass-fail 0 / 1, 1-5 ->
(s - 1) / 4, 0-1 as is) and the raw verdict is kept in the details.

Example:
    >>> from ragworks.eval._judge_specs import CustomJudgeSpec
    >>> spec = CustomJudgeSpec(name="cites", instructions="Cites a source.", scale="1-5")
    >>> response_format(spec)["json_schema"]["schema"]["required"]
    ['rationale', 'rating']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Feedback
from mlflow.genai.scorers import Scorer, scorer
from pydantic import BaseModel, Field

from ragworks.errors import ConfigError
from ragworks.eval import prompts as P
from ragworks.eval._extract import answer_of, question_of, retrieved_of
from ragworks.eval._judge_specs import CustomJudgeSpec, check_unique, load_judge_specs
from ragworks.eval._llm_judge import MAX_PASSAGE_CHARS, JudgeClient
from ragworks.eval.judges import Judge, Judgement
from ragworks.eval.scorers import _feedback, _judged, _JudgeRef

PROMPT_VERSION = 1
"""Bump when the wording below changes (it keys the cache, with the judge's own instructions)."""
_LABELS = {"question": "Question", "answer": "Answer", "context": "Context passages", "expected": "Expected"}


class _PassFail(BaseModel):
    rationale: str = ""
    passed: bool


class _Rating(BaseModel):
    rationale: str = ""
    rating: int = Field(ge=1, le=5)


class _Score(BaseModel):
    rationale: str = ""
    score: float = Field(ge=0.0, le=1.0)


_REPLIES: dict[str, tuple[type[BaseModel], str, dict[str, Any]]] = {
    "pass-fail": (_PassFail, "passed", {"type": "boolean"}),
    "1-5": (_Rating, "rating", {"type": "integer", "enum": [1, 2, 3, 4, 5]}),
    "0-1": (_Score, "score", {"type": "number", "minimum": 0, "maximum": 1}),
}
_RUBRIC = {
    "pass-fail": '"passed" is true when the answer meets the instructions, false otherwise.',
    "1-5": '"rating" is 5 when the answer fully meets the instructions, 3 partly, 1 not at all.',
    "0-1": '"score" is 1.0 when the answer fully meets the instructions, 0.0 not at all.',
}


def response_format(spec: CustomJudgeSpec) -> dict[str, Any]:
    """The JSON schema `response_format` of the judge's reply (strict: exactly these fields)."""
    _, field, value = _REPLIES[spec.scale]
    schema = {
        "type": "object",
        "properties": {"rationale": {"type": "string"}, field: value},
        "required": ["rationale", field],
        "additionalProperties": False,
    }
    slug = spec.scale.replace("-", "_")
    return {
        "type": "json_schema",
        "json_schema": {"name": f"ragworks_{slug}", "schema": schema, "strict": True},
    }


def prompt_of(spec: CustomJudgeSpec) -> P.Prompt:
    """The judge's prompt: its instructions and rubric (system), then the inputs it reads (user)."""
    _, field, _ = _REPLIES[spec.scale]
    shape = '{"rationale": "...", "' + field + '": ...}'
    system = (
        "You grade an AI assistant's answer against these instructions:\n"
        f"{spec.instructions.strip()}\n\n{_RUBRIC[spec.scale]} Give a short rationale first. "
        f"Reply with one JSON object and nothing else. Shape: {shape}"
    )
    user = "\n\n".join(f"{_LABELS[name]}:\n{{{name}}}" for name in spec.inputs)
    return P.Prompt(id=f"custom.{spec.name}", version=PROMPT_VERSION, system=system, user=user)


def judge_client(judge: Judge) -> JudgeClient | None:
    """The LLM client behind a judge (through wrappers such as thresholds), or None for offline judges."""
    client = getattr(judge, "client", None)
    return client if isinstance(client, JudgeClient) else None


def require_llm_judge(specs: Sequence[CustomJudgeSpec], judge: Judge) -> JudgeClient:
    """The judge's client; checked before any row runs.

    Raises:
        ConfigError: the judge is not an LLM judge (custom judges need a model to read instructions).
    """
    client = judge_client(judge)
    if client is None:
        names = ", ".join(s.name for s in specs)
        raise ConfigError(
            f"Custom judges ({names}) need an LLM judge, not {judge.name!r}: "
            "pass --judge openai:<model> or --judge databricks:<endpoint>."
        )
    return client


def judge_once(client: JudgeClient, spec: CustomJudgeSpec, values: dict[str, str]) -> Judgement:
    """One judgement of one row: the validated reply as a normalised score, the raw verdict in details."""
    prompt = prompt_of(spec)
    schema, field, _ = _REPLIES[spec.scale]
    reply = client.complete(prompt, schema, response_format=response_format(spec), **values)
    raw = getattr(reply, field)
    details = {
        "scale": spec.scale,
        "raw": raw,
        "model": client.model,
        "prompts": [prompt.key],
        "structured": "json_object" if client.schema_refused else "json_schema",
    }
    rationale = (
        f"{'Pass' if raw else 'Fail'}. " if spec.scale == "pass-fail" else f"Rated {raw} ({spec.scale}). "
    )
    return Judgement(
        score=spec.normalise(raw), rationale=rationale + str(getattr(reply, "rationale", "")), details=details
    )


def _values(
    spec: CustomJudgeSpec, inputs: Any, outputs: Any, expectations: Any, trace: Any
) -> dict[str, str] | None:
    """The prompt's values for a row, or None when the row lacks the expected answer the judge reads."""
    values: dict[str, str] = {}
    if "question" in spec.inputs:
        values["question"] = question_of(inputs)
    if "answer" in spec.inputs:
        values["answer"] = answer_of(outputs)
    if "context" in spec.inputs:
        docs = retrieved_of(trace, outputs)
        values["context"] = (
            P.numbered([d.text[:MAX_PASSAGE_CHARS] for d in docs]) or "(no passages retrieved)"
        )
    if "expected" in spec.inputs:
        exp = expectations or {}
        expected = exp.get("expected_response") or P.numbered(list(exp.get("expected_facts") or []))
        if not expected:
            return None
        values["expected"] = expected
    return values


def custom_scorer(spec: CustomJudgeSpec, judge: Judge) -> Scorer:
    """The MLflow scorer of one custom judge, graded by `judge` (an LLM judge)."""
    ref = _JudgeRef(judge)
    name = spec.name

    @scorer(name=name, description=spec.instructions[:200])
    def custom_judge(
        inputs: Any, outputs: Any, expectations: Any = None, trace: Any = None
    ) -> Feedback | None:
        values = _values(spec, inputs, outputs, expectations, trace)
        if values is None:
            return None  # the row has no expected answer to compare with: no assessment

        def grade(j: Judge) -> Feedback:
            return _feedback(name, j, judge_once(require_llm_judge([spec], j), spec, values))

        return _judged(name, ref, grade)

    return custom_judge


def custom_scorers(
    specs: Sequence[CustomJudgeSpec], judge: Judge, *, taken: Sequence[str] = ()
) -> list[Scorer]:
    """One scorer per custom judge; checks that the judge is an LLM judge and that names are free.

    Raises:
        ConfigError: the judge is offline, or a custom judge reuses the name of another scorer.
    """
    if not specs:
        return []
    require_llm_judge(specs, judge)
    check_unique(specs)
    clash = [s.name for s in specs if s.name in taken]
    if clash:
        raise ConfigError(
            f"Custom judge {clash[0]!r} has the name of another scorer of this run; rename the judge."
        )
    return [custom_scorer(s, judge) for s in specs]


def gather_specs(
    suite_specs: Sequence[CustomJudgeSpec], extra: str | Path | Sequence[CustomJudgeSpec] | None
) -> list[CustomJudgeSpec]:
    """The suite's judges followed by those of a judges file (or a list of specs)."""
    more = load_judge_specs(extra) if isinstance(extra, str | Path) else list(extra or [])
    specs = [*suite_specs, *more]
    check_unique(specs)
    return specs


__all__ = [
    "CustomJudgeSpec",
    "custom_scorer",
    "custom_scorers",
    "gather_specs",
    "judge_client",
    "judge_once",
    "prompt_of",
    "require_llm_judge",
    "response_format",
]
