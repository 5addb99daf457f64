"""Offline answer relevance punishes answers that do not answer, and keeps real ones high."""

from __future__ import annotations

import pytest

from ragworks.eval._answer_form import split_answer, type_match
from ragworks.eval._offline_judge import OfflineJudge

QUESTION = "How is the ragworks package installed?"
NON_ANSWERS = {
    "pointer": "See the blog post.",
    "pointer with topic": "For more on installing the ragworks package, see the blog post.",
    "link": "https://example.org/ragworks/install",
    "command": "pip install ragworks",
    "code": "```bash\npip install 'ragworks[dense]'\nragworks quickstart\n```",
    "metadata": "Source: install.md (chunk 3, score 0.83)\nTitle: Installing the ragworks package",
    "json record": '{"doc_id": "install", "title": "Install the ragworks package", "score": 0.91}',
    "refusal": "I'm sorry, but I don't have enough information to answer that.",
    "echo": "You asked how to install the ragworks package.",
}


@pytest.fixture(scope="module")
def judge() -> OfflineJudge:
    return OfflineJudge(dense=False)


@pytest.mark.parametrize("kind", sorted(NON_ANSWERS))
def test_non_answers_score_near_zero_where_counting_question_terms_did_not(
    judge: OfflineJudge, kind: str
) -> None:
    answer = NON_ANSWERS[kind]
    assert judge.answer_relevance(QUESTION, answer).score <= 0.05
    if kind in {"pointer with topic", "metadata", "json record", "echo"}:
        assert judge.term_relevance(QUESTION, answer).score >= 0.5  # the term count was fooled


def test_the_issue_examples(judge: OfflineJudge) -> None:
    question = "How is an agent evaluated?"
    assert judge.term_relevance(question, "See the blog post about how to evaluate an agent.").score == 1.0
    pointer = judge.answer_relevance(question, "See the blog post about how to evaluate an agent.")
    assert pointer.score == 0.0 and "pointer" in pointer.rationale
    command = judge.answer_relevance(question, "ragworks eval suite.yaml --config agent.yaml")
    assert command.score == 0.0 and command.details["non_answer"] == ["code"]


def test_real_answers_stay_relevant(judge: OfflineJudge) -> None:
    prose = "Install the ragworks package with pip, then run `ragworks quickstart` to check it works [1]."
    assert judge.answer_relevance(QUESTION, prose).score >= 0.9
    mixed = prose + "\n```bash\npip install ragworks\n```\nSee the docs for more."
    judged = judge.answer_relevance(QUESTION, mixed)
    assert judged.score >= 0.9 and set(judged.details["non_answer"]) == {"code", "pointer"}
    assert judge.answer_relevance("When was the Battle of Hastings?", "1066.").score >= 0.6
    assert judge.answer_relevance("Who led the Normans?", "Rollo.").score >= 0.6
    assert judge.answer_relevance("Is BM25 lexical or dense?", "Lexical.").score > 0.02
    assert judge.answer_relevance("Is BM25 a ranking function?", "Yes.").score > 0.02


def test_off_topic_prose_ranks_above_non_answers_but_stays_low(judge: OfflineJudge) -> None:
    off_topic = judge.answer_relevance(QUESTION, "The weather in Oslo is sunny today.").score
    assert 0.0 < off_topic < 0.1
    assert off_topic > judge.answer_relevance(QUESTION, NON_ANSWERS["pointer"]).score


def test_answer_form_keeps_prose_with_inline_code_and_dates() -> None:
    parts = split_answer("Run `ragworks ingest docs/` to build the index. It was released on 2024-05-01.")
    assert parts.kinds == () and "ragworks ingest" in parts.prose
    assert split_answer("1066.").kinds == ()
    assert type_match("How many men were in the army?", "30,000.") == 1.0
    assert type_match("How many men were in the army?", "Many.") == 0.0
