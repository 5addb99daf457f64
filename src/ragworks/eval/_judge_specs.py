"""Declarations of custom judges: a name, instructions, a scale and the inputs the judge reads.

A suite declares them under `judges:`, or a YAML file holds them (`ragworks eval --judges FILE`):
a list of judges, or a mapping with `judges:`. The LLM judge runs them (`ragworks.eval.custom_judges`).

Example:
    >>> spec = CustomJudgeSpec.model_validate(
    ...     {"name": "polite", "instructions": "The answer is polite.", "scale": "pass-fail"})
    >>> spec.inputs, spec.normalise(True)
    (['question', 'answer'], 1.0)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragworks.errors import EvalError

Scale = Literal["pass-fail", "1-5", "0-1"]
Input = Literal["question", "answer", "context", "expected"]
_DEFAULT_INPUTS: tuple[Input, ...] = ("question", "answer")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class CustomJudgeSpec(BaseModel):
    """One judge written as guidelines; its score is normalised to [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """The metric's name (letters, digits, underscores), as in `--fail-under NAME=...`."""
    instructions: str = Field(min_length=1)
    """What a good answer does, in plain words."""
    scale: Scale = "pass-fail"
    """pass-fail (0 or 1), 1-5 (mapped to (s - 1) / 4) or 0-1 (as given)."""
    inputs: list[Input] = Field(default_factory=lambda: list(_DEFAULT_INPUTS), min_length=1)
    """What the judge sees: the question, the answer, the retrieved context, the expected answer or facts."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a judge name is letters, digits and underscores, starting with a letter")
        return value

    @field_validator("inputs")
    @classmethod
    def _unique(cls, value: list[Input]) -> list[Input]:
        return list(dict.fromkeys(value))

    def normalise(self, raw: bool | float) -> float:
        """The raw verdict (a bool, a 1-5 rating or a 0-1 score) as a score in [0, 1]."""
        if self.scale == "pass-fail":
            return 1.0 if raw else 0.0
        if self.scale == "1-5":
            return (float(raw) - 1) / 4
        return float(raw)


def load_judge_specs(path: str | Path) -> list[CustomJudgeSpec]:
    """Read custom judges from YAML: a list of judges, or a mapping with `judges:`.

    Raises:
        EvalError: the file is missing, not YAML, or a judge is invalid (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise EvalError(f"Judges file {path} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EvalError(f"Judges file {path} is not valid YAML: {exc}") from None
    if isinstance(raw, dict):
        raw = raw.get("judges")
    if not isinstance(raw, list) or not raw:
        raise EvalError(
            f"Judges file {path} must hold a non-empty list of judges (or a mapping with 'judges')."
        )
    return validate_specs(raw, source=f"judges file {path}")


def validate_specs(raw: Sequence[object], *, source: str) -> list[CustomJudgeSpec]:
    """Validate judge declarations; errors name the judge (1-based) and the field."""
    specs = []
    for number, item in enumerate(raw, 1):
        try:
            specs.append(CustomJudgeSpec.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(judge)'}: {e['msg']}" for e in exc.errors()
            )
            raise EvalError(f"Invalid custom judge {number} in {source}: {problems}.") from None
    check_unique(specs)
    return specs


def check_unique(specs: Sequence[CustomJudgeSpec]) -> None:
    """Refuse two judges with one name (their metrics would overwrite each other)."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise EvalError(f"Two custom judges are named {spec.name!r}; give each a name of its own.")
        seen.add(spec.name)


__all__ = ["CustomJudgeSpec", "Input", "Scale", "check_unique", "load_judge_specs", "validate_specs"]
