"""The offline judge: lexical support, noncommittal answers, relevance and correctness."""

from __future__ import annotations

import pytest

from ragworks.errors import ConfigError
from ragworks.eval.judges import Judge, Judgement, get_judge

CONTEXT = [
    "The local index combines two kinds of search. BM25 finds chunks that share rare words.",
    "Dense search compares embedding vectors, so it also finds paraphrases.",
]


@pytest.fixture(scope="module")
def judge() -> Judge:
    return get_judge("offline:lexical")


def test_supported_answer_scores_high_and_citations_are_ignored(judge: Judge) -> None:
    result = judge.faithfulness(
        "How?", "BM25 finds chunks that share rare words [1]. Dense search finds paraphrases [2].", CONTEXT
    )
    assert result.score > 0.9
    assert "2 of 2 sentences" in result.rationale


def test_unsupported_sentence_is_named(judge: Judge) -> None:
    answer = "BM25 finds chunks that share rare words. The index was invented by Napoleon in Paris in 1802."
    result = judge.faithfulness("How?", answer, CONTEXT)
    assert result.score < 0.2
    assert "Napoleon" in result.rationale
    verdicts = result.details["sentences"]
    assert [v["supported"] for v in verdicts] == [True, False]


def test_no_context_and_empty_answer(judge: Judge) -> None:
    assert judge.faithfulness("q", "Something.", []).score == 0.0
    assert judge.faithfulness("q", "", CONTEXT).score == 0.0


def test_noncommittal_answer_is_faithful_but_not_relevant(judge: Judge) -> None:
    refusal = "I could not find this in the documents."
    assert judge.faithfulness("What is X?", refusal, CONTEXT).score == 1.0
    relevance = judge.answer_relevance("What is X?", refusal)
    assert relevance.score == 0.0 and relevance.details["noncommittal"] is True


def test_relevance_counts_question_terms(judge: Judge) -> None:
    good = judge.answer_relevance(
        "How does dense search find paraphrases?", "Dense search compares vectors to find paraphrases."
    )
    bad = judge.answer_relevance("How does dense search find paraphrases?", "The weather is sunny today.")
    assert good.score > 0.9 > 0.1 > bad.score
    assert "missing" in bad.rationale
    assert judge.context_relevance("What is BM25?", CONTEXT[0]).score == 1.0
    assert judge.context_relevance("What is BM25?", CONTEXT[1]).score == 0.0


def test_correctness_by_facts_and_by_expected_response(judge: Judge) -> None:
    answer = "BM25 finds chunks sharing rare words."
    facts = judge.correctness(
        "q", answer, expected_facts=["BM25 finds chunks with rare words", "Dense search finds paraphrases"]
    )
    assert facts.score == 0.5 and "Dense search" in facts.rationale
    assert (
        judge.correctness("q", answer, expected_response="BM25 finds chunks that share rare words.").score
        == 1.0
    )
    assert judge.correctness("q", answer).score == 0.0


def test_judgement_score_is_bounded() -> None:
    with pytest.raises(ValueError):
        Judgement(score=1.5, rationale="x")


def test_unknown_judge_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="openai:<model>"):
        get_judge("claude")
    with pytest.raises(ConfigError):
        get_judge("openai:")
