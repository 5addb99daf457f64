"""Citation checks: right, wrong, missing and impossible citations, and the scorers that report them."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from mlflow.entities import Feedback

from ragworks.eval._extract import RetrievedDoc
from ragworks.eval.citations import check_citations, split_cited
from ragworks.eval.judges import Judgement, get_judge
from ragworks.eval.scorers import SCORER_GROUPS, SCORER_NAMES, make_scorer

DOCS = [
    RetrievedDoc(text="BM25 ranks words by how rare they are across the corpus.", doc_uri="/d/indexing.md"),
    RetrievedDoc(text="Agents call tools when the model asks for them.", doc_uri="/d/agents.md"),
    RetrievedDoc(text="MLflow logs runs, parameters and metrics to a tracker.", doc_uri="/d/mlflow.md"),
]
JUDGE = get_judge("offline:lexical")


def _check(answer: str) -> tuple[float | None, float | None]:
    check = check_citations("How does it work?", answer, DOCS, JUDGE)
    return check.precision, check.recall


def test_right_citations_score_full_precision_and_recall() -> None:
    answer = "BM25 ranks words by how rare they are [1]. MLflow logs runs and metrics [3]."
    assert _check(answer) == (1.0, 1.0)


def test_a_citation_to_the_wrong_source_costs_precision_not_recall() -> None:
    answer = "BM25 ranks words by how rare they are [1]. MLflow logs runs and metrics [2]."
    check = check_citations("q", answer, DOCS, JUDGE)
    assert (check.precision, check.recall) == (0.5, 1.0)
    wrong = check.sentences[1]
    assert not wrong.correctly_cited and wrong.supported  # [3] supports it, [2] does not
    assert "cites [2]" in check.rationale("precision")


def test_a_missing_citation_costs_recall() -> None:
    answer = "BM25 ranks words by how rare they are [1]. MLflow logs runs and metrics."
    check = check_citations("q", answer, DOCS, JUDGE)
    assert (check.precision, check.recall) == (1.0, 0.5)
    assert "MLflow logs runs and metrics." in check.rationale("recall")


def test_an_unsupported_claim_is_left_out_of_recall_and_cited_it_costs_precision() -> None:
    assert _check("BM25 ranks words by how rare they are [1]. The moon is made of cheese.") == (1.0, 1.0)
    assert _check("BM25 ranks words by how rare they are [1]. The moon is made of cheese [2].") == (0.5, 1.0)


def test_a_citation_of_a_source_that_was_not_retrieved_is_wrong() -> None:
    check = check_citations("q", "BM25 ranks words by how rare they are [7].", DOCS, JUDGE)
    assert check.precision == 0.0 and check.sentences[0].unknown == ("7",)


def test_lists_ranges_file_names_and_marks_after_the_full_stop() -> None:
    assert split_cited("Runs are logged. [3]\n- Tools run [1, 2].") == [
        ("Runs are logged.", ["3"]),
        ("Tools run.", ["1, 2"]),
    ]
    joint = "BM25 ranks rare words and agents call tools [1-2]."
    assert _check(joint) == (1.0, 1.0)  # supported by the two cited sources together
    assert _check("MLflow logs runs and metrics [mlflow.md].") == (1.0, 1.0)
    assert _check("MLflow logs runs and metrics [indexing.md].") == (0.0, 1.0)


def test_no_citation_and_no_claim_give_no_value() -> None:
    assert _check("MLflow logs runs and metrics.") == (None, 0.0)
    assert _check("I could not find this in the documents.") == (None, None)
    assert check_citations("q", "MLflow logs runs [1].", [], JUDGE).precision == 0.0


RESPONSE = {
    "output": [
        {
            "type": "message",
            "content": [{"type": "output_text", "text": "BM25 ranks rare words [1]. Agents call tools."}],
        }
    ],
    "custom_outputs": {
        "sources": [
            {"n": 1, "source": "indexing.md", "snippet": DOCS[0].text},
            {"n": 2, "source": "agents.md", "snippet": DOCS[1].text},
        ]
    },
}


def test_the_citations_scorer_gives_precision_and_recall_with_per_sentence_details() -> None:
    assert "citations" in SCORER_GROUPS and "citations" not in SCORER_NAMES
    found = make_scorer("citations", judge="offline:lexical").run(
        inputs={"question": "What is BM25?"}, outputs=RESPONSE
    )
    assert isinstance(found, list) and all(isinstance(f, Feedback) for f in found)
    values = {f.name: f.value for f in found}
    assert values == {"citation_precision": 1.0, "citation_recall": 0.5}
    details = json.loads(found[0].metadata["details"])
    assert [s["cites"] for s in details["sentences"]] == [[1], []]
    single = make_scorer("citation_recall", judge="offline:lexical").run(
        inputs={"question": "What is BM25?"}, outputs=RESPONSE
    )
    assert isinstance(single, Feedback) and single.name == "citation_recall" and single.value == 0.5


class _Failing:
    name = "openai:broken"

    def faithfulness(self, question: str, answer: str, contexts: Sequence[str]) -> Judgement:
        raise TimeoutError("judge timed out")

    def answer_relevance(self, question: str, answer: str) -> Judgement:
        raise NotImplementedError

    def context_relevance(self, question: str, passage: str) -> Judgement:
        raise NotImplementedError

    def correctness(self, question: str, answer: str, **kwargs: object) -> Judgement:
        raise NotImplementedError


def test_a_judge_that_fails_is_an_error_on_the_row() -> None:
    found = make_scorer("citations", judge=_Failing()).run(inputs={"question": "q"}, outputs=RESPONSE)
    assert isinstance(found, Feedback) and found.error is not None
    assert "judge timed out" in found.error.error_message


def test_unknown_scorer_lists_the_groups() -> None:
    from ragworks.errors import ConfigError

    with pytest.raises(ConfigError, match="citations"):
        make_scorer("citation")
