"""A retriever's `fusion_weight` option sets the dense share of hybrid search, per retriever."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from ragworks.embeddings import Embedder
from ragworks.retrieval.local import Chunk, LocalIndex, LocalRetriever


class _AxisEmbedder(Embedder):
    """Texts starting with 'dense' point along the query's axis; the rest are orthogonal to it."""

    name = "axis"
    dim = 2

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        rows = [[1.0, 0.0] if t.startswith(("dense", "query")) else [0.0, 1.0] for t in texts]
        return np.asarray(rows, dtype=np.float32)


@pytest.fixture
def index() -> LocalIndex:
    idx = LocalIndex(embeddings=_AxisEmbedder())
    idx.add(
        [
            Chunk(id="lexical", text="zebra zebra zebra stripes"),
            Chunk(id="semantic", text="dense vectors agree with the question"),
            Chunk(id="other", text="unrelated filler text"),
        ]
    )
    return idx


def test_fusion_weight_moves_the_hybrid_ranking_between_bm25_and_dense(index: LocalIndex) -> None:
    def top(weight: float | None) -> str | None:
        docs = LocalRetriever(index=index, k=1, fusion_weight=weight).invoke("query zebra")
        return docs[0].id

    assert top(0.0) == "lexical"
    assert top(1.0) == "semantic"
    assert index.fusion.weight_dense == pytest.approx(0.55)  # the index's own setting is untouched


def test_fusion_weight_outside_zero_to_one_is_refused(index: LocalIndex) -> None:
    with pytest.raises(ValueError, match="fusion_weight"):
        LocalRetriever(index=index, fusion_weight=1.5)
