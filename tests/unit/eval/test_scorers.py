"""Scorers: question / answer / context extraction, retrieval metrics, and judge errors as row errors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from mlflow.entities import Feedback

from ragworks.eval._extract import RetrievedDoc, answer_of, question_of, retrieved_of
from ragworks.eval.judges import Judgement
from ragworks.eval.scorers import make_scorer, make_scorers, retrieval_value

RESPONSE = {
    "output": [
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "BM25 ranks words [1]."}],
        }
    ],
    "custom_outputs": {
        "sources": [
            {"id": "c1", "source": "/docs/indexing.md", "snippet": "BM25 ranks words by rarity."},
            {"id": "c2", "source": "/docs/agents.md", "snippet": "Agents call tools."},
        ]
    },
}


def test_question_and_answer_extraction() -> None:
    assert question_of({"question": "q?"}) == "q?"
    request = {
        "input": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ]
    }
    assert question_of(request) == "second"
    assert answer_of(RESPONSE) == "BM25 ranks words [1]."
    assert answer_of({"choices": [{"message": {"content": "chat"}}]}) == "chat"
    assert answer_of("plain") == "plain"


def test_context_falls_back_to_custom_outputs_sources() -> None:
    docs = retrieved_of(None, RESPONSE)
    assert [d.label for d in docs] == ["indexing.md", "agents.md"]
    assert docs[0].text == "BM25 ranks words by rarity."


def _docs(*names: str) -> list[RetrievedDoc]:
    return [RetrievedDoc(text=n, id=f"c{i}", doc_uri=f"/x/{n}") for i, n in enumerate(names)]


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("precision_at_k", 2 / 3),
        ("recall_at_k", 1.0),
        ("mrr", 0.5),
        ("ndcg_at_k", (1 / 1.58496 + 1 / 2) / (1 + 1 / 1.58496)),
    ],
)
def test_retrieval_metrics(metric: str, expected: float) -> None:
    docs = _docs("b.md", "a.md", "c.md")
    assert retrieval_value(metric, docs, ["a.md", "c.md"], k=3) == pytest.approx(expected, rel=1e-4)


def test_ndcg_counts_each_expected_doc_once() -> None:
    docs = _docs("a.md", "a.md", "a.md")
    assert retrieval_value("ndcg_at_k", docs, ["a.md"], k=3) == 1.0
    assert retrieval_value("recall_at_k", docs, ["a.md", "z.md"], k=3) == 0.5
    assert retrieval_value("mrr", _docs("x.md"), ["a.md"], k=3) == 0.0


def test_retrieval_scorer_matches_ids_and_skips_rows_without_expectations() -> None:
    recall = make_scorer("recall_at_k", k=1)
    feedback = recall(outputs=RESPONSE, expectations={"expected_doc_ids": ["indexing.md"]})
    assert isinstance(feedback, Feedback) and feedback.value == 1.0
    assert "matching ranks [1]" in feedback.rationale
    assert recall(outputs=RESPONSE, expectations={"expected_doc_ids": ["c2"]}).value == 0.0  # rank 2 > k
    assert recall(outputs=RESPONSE, expectations={}) is None


def test_judge_scorers_read_inputs_outputs_and_context() -> None:
    scorers = {s.name: s for s in make_scorers(judge="offline:lexical")}
    faith = scorers["faithfulness"](inputs={"question": "What is BM25?"}, outputs=RESPONSE, trace=None)
    assert faith.value == 1.0 and faith.source.source_id == "offline:lexical"
    ctx = scorers["context_relevance"](inputs={"question": "What is BM25?"}, outputs=RESPONSE, trace=None)
    assert ctx.value == 0.5 and "agents.md" in ctx.rationale
    assert scorers["correctness"](inputs={"question": "q"}, outputs=RESPONSE, expectations=None) is None


class _BrokenJudge:
    name = "openai:broken"

    def faithfulness(self, question: str, answer: str, contexts: Sequence[str]) -> Judgement:
        raise RuntimeError("judge exploded")

    def answer_relevance(self, question: str, answer: str) -> Judgement:
        return Judgement(score=1.0, rationale="fine")

    def context_relevance(self, question: str, passage: str) -> Judgement:
        raise RuntimeError("nope")

    def correctness(self, question: str, answer: str, **kwargs: object) -> Judgement:
        raise RuntimeError("nope")


def test_a_failed_judgement_becomes_an_error_feedback() -> None:
    scorer = make_scorer("faithfulness", judge=_BrokenJudge())
    feedback = scorer(inputs={"question": "q"}, outputs=RESPONSE, trace=None)
    assert feedback.value is None
    assert feedback.error.error_code == "JUDGE_ERROR"
    assert "judge exploded" in feedback.error.error_message
    assert feedback.error.stack_trace is None


def test_unknown_scorer_name() -> None:
    from ragworks.errors import ConfigError

    with pytest.raises(ConfigError, match="Available"):
        make_scorer("bleu")
