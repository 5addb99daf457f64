"""The offline model's question-sentence similarity: choosing it, re-ordering by it, MiniLM's cache."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from langchain_core.documents import Document

from ragworks.agents.logged_model import needed_extras
from ragworks.agents.offline import extractive_answer, rank_sentences
from ragworks.agents.prompts import NOT_FOUND, context_message
from ragworks.agents.sentence_similarity import MiniLMSimilarity, sentence_similarity
from ragworks.config import AgentConfig
from ragworks.embeddings import dense_available
from ragworks.errors import ConfigError
from ragworks.models import get_chat_model

# The first sentence shares "river" and "city" with the question, the one that answers only "river".
SOURCES = [
    (1, "The river city holds a river festival and a city fair every spring."),
    (2, "The river runs from the northern hills down to the sea."),
]
QUESTION = "Where does the city's river go?"


class Prefers:
    """A similarity that scores one sentence 1 and every other 0, counting its calls."""

    def __init__(self, favourite: str) -> None:
        self.favourite = favourite
        self.calls = 0

    def __call__(self, question: str, sentences: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.array([1.0 if s == self.favourite else 0.0 for s in sentences])


def test_the_lexical_ranking_alone_picks_the_first_sentence() -> None:
    ranked = rank_sentences(QUESTION, SOURCES)
    assert ranked[0].sentence.source == 1
    assert extractive_answer(QUESTION, SOURCES, max_sentences=1).endswith("[1].")


def test_a_similarity_reorders_the_lexical_candidates() -> None:
    similarity = Prefers(SOURCES[1][1])
    answer = extractive_answer(QUESTION, SOURCES, max_sentences=1, similarity=similarity)
    assert answer == "The river runs from the northern hills down to the sea [2]."
    assert similarity.calls == 1


def test_a_similarity_never_overrides_abstention() -> None:
    similarity = Prefers("The sky is blue today.")
    sources = [(1, "The sky is blue today.")]
    answer = extractive_answer("How do volcanoes erupt?", sources, similarity=similarity)
    assert answer == NOT_FOUND
    assert similarity.calls == 0  # nothing lexical to re-order: MiniLM is not even asked


def test_lexical_selects_no_similarity_and_unknown_names_are_config_errors() -> None:
    assert sentence_similarity("lexical") is None
    with pytest.raises(ConfigError, match="Unknown offline similarity 'bert'"):
        sentence_similarity("bert")  # type: ignore[arg-type]
    for name in ("offline:bert", "offline:auto"):
        with pytest.raises(ConfigError, match="'offline:minilm' or 'offline:lexical'"):
            get_chat_model(name)
    assert get_chat_model("offline:lexical").similarity == "lexical"  # type: ignore[attr-defined]
    assert AgentConfig(llm="offline:minilm").llm == "offline:minilm"
    with pytest.raises(ValueError, match="offline:lexical"):
        AgentConfig(llm="offline:bert")


def test_auto_is_minilm_exactly_when_the_dense_extra_is_installed() -> None:
    chosen = sentence_similarity("auto")
    assert isinstance(chosen, MiniLMSimilarity) == dense_available()
    assert (chosen is None) == (not dense_available())


def test_minilm_is_refused_in_one_line_without_the_dense_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ragworks.agents.sentence_similarity._dense", lambda: False)
    assert sentence_similarity("auto") is None
    with pytest.raises(ConfigError, match=r"pip install 'ragworks\[dense\]'"):
        sentence_similarity("minilm")
    with pytest.raises(ConfigError, match=r"pip install 'ragworks\[dense\]'"):
        get_chat_model("offline:minilm")  # when the agent is built, not at its first reply


def test_a_logged_offline_agent_that_matches_with_minilm_needs_the_dense_extra() -> None:
    assert "dense" in needed_extras(AgentConfig(llm="offline:minilm"))
    assert "dense" not in needed_extras(AgentConfig(llm="offline:lexical"))
    assert "dense" not in needed_extras(AgentConfig(llm="offline"))  # no MiniLM index: lexical


@pytest.mark.parametrize(("embedder", "expected"), [("minilm", "offline"), ("hashing", "offline:lexical")])
def test_plain_offline_matches_with_minilm_only_over_a_minilm_index(
    embedder: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.agents import builder

    monkeypatch.setattr(builder, "index_embedder", lambda folder: embedder)
    assert builder.answer_model_name(AgentConfig(llm="offline")) == expected
    assert builder.answer_model_name(AgentConfig(llm="offline:minilm")) == "offline:minilm"
    assert builder.answer_model_name(AgentConfig(llm="offline:lexical")) == "offline:lexical"


def test_no_close_sentence_is_not_found_even_with_lexical_matches() -> None:
    far = Prefers("no sentence has this text")  # every candidate scores 0, far below the floor
    assert rank_sentences(QUESTION, SOURCES)  # lexically there are candidates
    assert extractive_answer(QUESTION, SOURCES, similarity=far) == NOT_FOUND
    assert far.calls == 1


def test_the_offline_model_passes_its_similarity_to_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    similarity = Prefers(SOURCES[1][1])
    monkeypatch.setattr("ragworks.agents.offline.sentence_similarity", lambda name: similarity)
    model = get_chat_model("offline:minilm")
    docs = [Document(page_content=text, metadata={"source": f"d{n}.md"}) for n, text in SOURCES]
    reply = model.invoke([context_message(QUESTION, docs)])
    assert "[2]" in str(reply.content) and "[1]" not in str(reply.content)


@pytest.mark.slow
@pytest.mark.skipif(not dense_available(), reason="needs the dense extra")
def test_minilm_scores_are_cosines_and_sentences_are_embedded_once() -> None:
    similarity = MiniLMSimilarity(cache_size=2)
    sentences = ["The river flows to the sea.", "A festival is held every spring."]
    first = similarity("Where does the river flow?", sentences)
    assert first.shape == (2,) and first[0] > first[1]
    encoded: list[list[str]] = []
    real = similarity._embedder.encode
    similarity._embedder.encode = lambda texts, **kw: encoded.append(list(texts)) or real(texts)  # type: ignore[method-assign]
    again = similarity("Where does the river flow?", sentences)
    assert encoded == [["Where does the river flow?"]]  # only the question: the sentences were cached
    np.testing.assert_allclose(again, first, atol=1e-5)
    similarity("Where?", ["A third sentence here."])
    assert len(similarity._cache) == 2  # the least recently used one was dropped
