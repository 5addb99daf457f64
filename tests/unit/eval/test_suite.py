"""Eval suites: YAML, JSONL and MLflow datasets, with errors that name the row and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragworks.errors import EvalError
from ragworks.eval.suite import EvalSuite, example_suite


def test_yaml_rows_accept_a_bare_question_and_a_responses_request(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "rows:\n"
        "  - inputs: What is BM25?\n"
        "    expectations: {expected_doc_ids: [a.md]}\n"
        "  - inputs: {input: [{role: user, content: Hi}]}\n",
        encoding="utf-8",
    )
    suite = EvalSuite.load(path)
    assert suite.name == "s"
    records = suite.to_records()
    assert records[0] == {
        "inputs": {"question": "What is BM25?"},
        "expectations": {"expected_doc_ids": ["a.md"]},
    }
    assert records[1] == {"inputs": {"input": [{"role": "user", "content": "Hi"}]}}


def test_jsonl_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [{"inputs": {"question": "q1"}, "expectations": {"expected_facts": ["f"]}}, {"inputs": "q2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    suite = EvalSuite.load(path)
    assert [r.inputs["question"] for r in suite.rows] == ["q1", "q2"]


def test_errors_name_the_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rows:\n  - inputs: ok\n  - inputs: ok\n    expectations: {expected_doc_ids: x, bogus: 1}\n",
        encoding="utf-8",
    )
    with pytest.raises(EvalError) as info:
        EvalSuite.load(path)
    message = str(info.value)
    assert "row 2, expectations.expected_doc_ids" in message
    assert "row 2, expectations.bogus: unknown field" in message


def test_a_row_without_a_question_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"inputs": {"query": "x"}}\n', encoding="utf-8")
    with pytest.raises(EvalError, match="row 1"):
        EvalSuite.load(path)


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"inputs": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(EvalError, match="line 2"):
        EvalSuite.load(path)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="does not exist"):
        EvalSuite.load(tmp_path / "nope.yaml")


def test_example_suite_covers_the_shipped_docs() -> None:
    suite = example_suite()
    assert len(suite.rows) >= 8
    ids = {d for r in suite.rows for d in (r.expectations.expected_doc_ids or [])}  # type: ignore[union-attr]
    assert ids == {"overview.md", "indexing.md", "agents.md", "mlflow.md", "serving.md"}


def test_round_trip_through_an_mlflow_dataset(tmp_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    suite = EvalSuite.model_validate(
        {
            "name": "tiny",
            "rows": [{"inputs": "What is BM25?", "expectations": {"expected_facts": ["ranking"]}}],
        }
    )
    dataset = suite.to_mlflow_dataset("tiny-suite")
    loaded = EvalSuite.load("mlflow-dataset:tiny-suite")
    assert loaded.to_records() == suite.to_records()
    assert EvalSuite.load(f"mlflow-dataset:{dataset.dataset_id}").rows[0].inputs == {
        "question": "What is BM25?"
    }
