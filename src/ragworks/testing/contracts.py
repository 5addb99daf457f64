"""Contract tests every retriever backend passes.

Usage example:

    class TestMyRetriever(RetrieverContract):
        @pytest.fixture
        def retriever(self, tmp_path):
            return build_my_retriever_over(CONTRACT_CORPUS, k=3)

The retriever must index `CONTRACT_CORPUS` (ids, texts and metadata as given) and return 3 chunks
by default.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from ragworks.retrieval.local import Chunk

CONTRACT_CORPUS: list[Chunk] = [
    Chunk(
        id="tomato",
        text="Tomatoes need full sun and regular watering to ripen.",
        metadata={"source": "garden.md", "chunk_index": 0, "year": 2019},
    ),
    Chunk(
        id="kubernetes",
        text="Kubernetes schedules containers onto nodes in a cluster.",
        metadata={"source": "infra.md", "chunk_index": 0, "year": 2021},
    ),
    Chunk(
        id="sourdough",
        text="Sourdough bread rises with a wild yeast starter culture.",
        metadata={"source": "kitchen.md", "chunk_index": 0, "year": 2022},
    ),
    Chunk(
        id="violin",
        text="A violin has four strings tuned in perfect fifths.",
        metadata={"source": "music.md", "chunk_index": 0, "year": 2020},
    ),
    Chunk(
        id="volcano",
        text="Volcanoes erupt when magma pressure breaks the crust.",
        metadata={"source": "geology.md", "chunk_index": 0, "year": 2023},
    ),
]


class RetrieverContract:
    """Subclass this and provide a `retriever` fixture over CONTRACT_CORPUS with k=3."""

    @pytest.fixture
    def retriever(self) -> BaseRetriever:
        raise NotImplementedError("Provide a `retriever` fixture over CONTRACT_CORPUS.")

    def _invoke(self, retriever: BaseRetriever, query: str, **kwargs: Any) -> list[Document]:
        docs = retriever.invoke(query, **kwargs)
        assert isinstance(docs, list)
        assert all(isinstance(d, Document) for d in docs)
        return docs

    def test_best_match_comes_first(self, retriever: BaseRetriever) -> None:
        docs = self._invoke(retriever, "sourdough starter yeast")
        assert docs and docs[0].id == "sourdough"

    def test_returns_at_most_k(self, retriever: BaseRetriever) -> None:
        assert 1 <= len(self._invoke(retriever, "strings containers magma sun yeast")) <= 3

    def test_documents_carry_id_source_and_descending_scores(self, retriever: BaseRetriever) -> None:
        docs = self._invoke(retriever, "kubernetes cluster nodes")
        assert docs[0].id == "kubernetes"
        assert docs[0].metadata["source"] == "infra.md"
        scores = [d.metadata["score"] for d in docs]
        assert scores == sorted(scores, reverse=True)
        assert len({d.id for d in docs}) == len(docs)

    def test_text_is_returned_unchanged(self, retriever: BaseRetriever) -> None:
        doc = self._invoke(retriever, "violin strings fifths")[0]
        assert doc.page_content == "A violin has four strings tuned in perfect fifths."

    def test_filters_restrict_results(self, retriever: BaseRetriever) -> None:
        docs = self._invoke(
            retriever, "tomatoes sun magma violin", filters={"source": ["music.md", "geology.md"]}
        )
        assert docs and {d.metadata["source"] for d in docs} <= {"music.md", "geology.md"}

    def test_batch_keeps_query_order(self, retriever: BaseRetriever) -> None:
        results = retriever.batch(["volcano magma", "tomato sun"])
        assert [r[0].id for r in results] == ["volcano", "tomato"]
