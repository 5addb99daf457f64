"""Eval suites: rows of `inputs` (a question or a Responses request) and optional `expectations`.

A row may instead be a conversation: `turns: [{question, expected_response?, expected_facts?,
expected_doc_ids?}, ...]` (optional `id`). Its records are one per turn, with the conversation's id
and the turn's number (1-based) in `inputs` (`CONVERSATION_KEY`, `TURN_KEY`); the runner plays
them in order, each with the conversation so far (see `ragworks.eval.conversations`).

A suite loads from YAML (`rows:` list), JSONL (one row per line) or an MLflow evaluation dataset
(`mlflow-dataset:<name or id>`). Errors name the row and the field.

Example:
    >>> suite = EvalSuite.model_validate({"name": "demo", "rows": [
    ...     {"inputs": "What is ragworks?", "expectations": {"expected_doc_ids": ["overview.md"]}}]})
    >>> suite.rows[0].inputs, suite.to_records()[0]["expectations"]
    ({'question': 'What is ragworks?'}, {'expected_doc_ids': ['overview.md']})
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from ragworks.errors import EvalError
from ragworks.eval._judge_specs import CustomJudgeSpec

MLFLOW_DATASET_PREFIX = "mlflow-dataset:"
CONVERSATION_KEY = "conversation_id"
"""The `inputs` key of a conversation turn's record naming its conversation."""
TURN_KEY = "turn"
"""The `inputs` key of a conversation turn's record holding its number (1-based)."""


class Expectations(BaseModel):
    """What a good answer to a row looks like; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    expected_response: str | None = None
    """A reference answer (correctness compares with it when no facts are given)."""
    expected_facts: list[str] | None = None
    """Facts the answer must state (correctness: the share stated)."""
    expected_doc_ids: list[str] | None = None
    """Documents retrieval should find: a chunk id, a doc URI, or a file name such as `overview.md`."""


class EvalRow(BaseModel):
    """One case: the request and what to expect."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any]
    """`{"question": ...}` or a Responses request `{"input": [...]}`; a bare string becomes a question.
    Any: a Responses request carries nested JSON."""
    expectations: Expectations | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    """Tags copied onto the row's trace."""

    @field_validator("inputs", mode="before")
    @classmethod
    def _question(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"question": value}
        return value

    @model_validator(mode="after")
    def _has_request(self) -> EvalRow:
        if not ({"question", "input", "messages"} & self.inputs.keys()):
            raise ValueError("inputs needs 'question', or a Responses request with 'input'")
        question = self.inputs.get("question")
        if "question" in self.inputs and (not isinstance(question, str) or not question.strip()):
            raise ValueError("inputs.question must be a non-empty string")
        return self


class Turn(Expectations):
    """One user turn of a conversation and what its answer should hold."""

    question: str = Field(min_length=1)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a turn's question must be a non-empty string")
        return value

    def expectations(self) -> dict[str, Any]:
        """The turn's expectations as a record's `expectations` (Any: JSON values)."""
        return self.model_dump(exclude_none=True, exclude={"question"})


class Conversation(BaseModel):
    """A case of several turns, asked in order, each with the earlier turns as its history."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    """The conversation's id in records and traces (default: `conversation-<row number>`)."""
    turns: list[Turn] = Field(min_length=1)
    tags: dict[str, str] = Field(default_factory=dict)
    """Tags copied onto every turn's trace."""


def _row_kind(value: Any) -> str:
    # Any: a raw row (dict) or an already built model
    if isinstance(value, dict):
        return "conversation" if "turns" in value else "row"
    return "conversation" if isinstance(value, Conversation) else "row"


SuiteRow = Annotated[
    Annotated[EvalRow, Tag("row")] | Annotated[Conversation, Tag("conversation")],
    Discriminator(_row_kind),
]
"""A single-turn row, or a conversation (a row with `turns`)."""


class EvalSuite(BaseModel):
    """A named list of rows."""

    model_config = ConfigDict(extra="forbid")

    name: str = "suite"
    description: str = ""
    rows: list[SuiteRow] = Field(min_length=1)
    judges: list[CustomJudgeSpec] = Field(default_factory=list)
    """Custom judges, run by the LLM judge besides the scorers (see `ragworks.eval.custom_judges`)."""

    @model_validator(mode="after")
    def _unique_conversation_ids(self) -> EvalSuite:
        ids = [cid for cid, _ in self._conversations()]
        duplicates = sorted({cid for cid in ids if ids.count(cid) > 1})
        if duplicates:
            raise ValueError(f"conversation ids must be unique; repeated: {', '.join(duplicates)}")
        return self

    def _conversations(self) -> list[tuple[str, Conversation]]:
        return [
            (row.id or f"conversation-{number}", row)
            for number, row in enumerate(self.rows, 1)
            if isinstance(row, Conversation)
        ]

    @property
    def has_conversations(self) -> bool:
        """Whether any row is a conversation."""
        return any(isinstance(row, Conversation) for row in self.rows)

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as the dicts `mlflow.genai.evaluate` takes, one per turn (Any: JSON values)."""
        ids = {id(conv): cid for cid, conv in self._conversations()}
        records = []
        for row in self.rows:
            if isinstance(row, Conversation):
                records.extend(_turn_records(ids[id(row)], row))
                continue
            record: dict[str, Any] = {"inputs": dict(row.inputs)}
            if row.expectations is not None:
                record["expectations"] = row.expectations.model_dump(exclude_none=True)
            if row.tags:
                record["tags"] = dict(row.tags)
            records.append(record)
        return records

    def questions(self) -> list[str]:
        """The questions of rows asked as `{"question": ...}` and of every conversation turn."""
        return [
            r["inputs"]["question"]
            for r in self.to_records()
            if isinstance(r["inputs"].get("question"), str)
        ]

    @classmethod
    def load(cls, source: EvalSuite | str | Path) -> EvalSuite:
        """Load a suite from a YAML / JSONL path or `mlflow-dataset:<name or id>`."""
        if isinstance(source, EvalSuite):
            return source
        text = str(source)
        if text.startswith(MLFLOW_DATASET_PREFIX):
            return cls.from_mlflow_dataset(text.removeprefix(MLFLOW_DATASET_PREFIX))
        path = Path(source)
        if not path.exists():
            raise EvalError(f"Suite file {path} does not exist (or write mlflow-dataset:<name>).")
        if path.suffix in {".jsonl", ".ndjson"}:
            return cls.from_jsonl(path)
        return cls.from_yaml(path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> EvalSuite:
        """Read a YAML suite: a mapping with `rows`, or a bare list of rows."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise EvalError(f"Suite {path} is not valid YAML: {exc}") from exc
        if isinstance(raw, list):
            raw = {"name": path.stem, "rows": raw}
        if not isinstance(raw, dict):
            raise EvalError(f"Suite {path} must hold a mapping with 'rows' or a list of rows.")
        raw.setdefault("name", path.stem)
        return _validate(raw, source=str(path))

    @classmethod
    def from_jsonl(cls, path: str | Path) -> EvalSuite:
        """Read a JSONL suite: one row object per line (blank lines skipped)."""
        path = Path(path)
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise EvalError(f"Suite {path} line {number} is not valid JSON: {exc.msg}") from None
        return _validate({"name": path.stem, "rows": rows}, source=str(path))

    @classmethod
    def from_mlflow_dataset(cls, name_or_id: str) -> EvalSuite:
        """Read the records of an MLflow evaluation dataset (by id `d-...` or by name)."""
        from mlflow.genai import datasets

        try:
            if name_or_id.startswith("d-"):
                dataset = datasets.get_dataset(dataset_id=name_or_id)
            else:
                dataset = datasets.get_dataset(name=name_or_id)
        except Exception as exc:
            raise EvalError(f"Could not load MLflow evaluation dataset {name_or_id!r}: {exc}") from exc
        frame = dataset.to_df()
        rows = [_dataset_row(record) for record in frame.to_dict(orient="records")]
        return _validate({"name": dataset.name, "rows": rows}, source=f"MLflow dataset {name_or_id!r}")

    def to_mlflow_dataset(self, name: str, *, experiment_id: str | list[str] | None = None) -> Any:
        """Create an MLflow evaluation dataset holding these rows (Any: mlflow EvaluationDataset)."""
        from mlflow.genai import datasets

        dataset = datasets.create_dataset(name=name, experiment_id=experiment_id)
        dataset.merge_records([{k: v for k, v in r.items() if k != "tags"} for r in self.to_records()])
        return dataset


def _turn_records(conversation_id: str, conversation: Conversation) -> list[dict[str, Any]]:
    records = []
    for number, turn in enumerate(conversation.turns, 1):
        inputs = {"question": turn.question, CONVERSATION_KEY: conversation_id, TURN_KEY: number}
        record: dict[str, Any] = {"inputs": inputs}
        if expectations := turn.expectations():
            record["expectations"] = expectations
        if conversation.tags:
            record["tags"] = dict(conversation.tags)
        records.append(record)
    return records


def _dataset_row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"inputs": record.get("inputs")}
    expectations = record.get("expectations")
    if isinstance(expectations, dict) and expectations:
        known = Expectations.model_fields.keys()
        row["expectations"] = {k: v for k, v in expectations.items() if k in known and v is not None}
    return row


def _validate(raw: dict[str, Any], *, source: str) -> EvalSuite:
    try:
        return EvalSuite.model_validate(raw)
    except ValidationError as exc:
        raise EvalError(format_suite_error(exc, source=source)) from None


def format_suite_error(exc: ValidationError, *, source: str) -> str:
    """Lines that name the row (1-based) and field of each problem."""
    lines = [f"Invalid suite {source}:"]
    for err in exc.errors():
        loc = list(err["loc"])
        where = "suite"
        if len(loc) >= 2 and loc[0] == "rows" and isinstance(loc[1], int):
            where = f"row {loc[1] + 1}"
            loc = loc[2:]
        kind = str(loc.pop(0)) if loc and loc[0] in ("row", "conversation") else "row"
        field = ".".join(str(p) for p in loc) or "(row)"
        if len(loc) >= 2 and loc[0] == "turns" and isinstance(loc[1], int):
            field = ".".join([f"turn {loc[1] + 1}", *(str(p) for p in loc[2:])])
        allowed = _allowed_fields(kind, loc)
        message = f"unknown field; allowed: {allowed}" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {where}, {field}: {message}")
    return "\n".join(lines)


def _allowed_fields(kind: str, loc: list[int | str]) -> str:
    if "expectations" in loc:
        return "expected_response, expected_facts, expected_doc_ids"
    if kind == "conversation":
        if "turns" in loc:
            return "question, expected_response, expected_facts, expected_doc_ids"
        return "id, turns, tags"
    return "inputs, expectations, tags (or turns, for a conversation)"


def example_suite_path() -> Path:
    """The example suite shipped with the package (questions over the shipped docs)."""
    return Path(str(files("ragworks") / "data" / "example_suite.yaml"))


def example_suite() -> EvalSuite:
    """Load the shipped example suite."""
    return EvalSuite.from_yaml(example_suite_path())
