"""The faiss HNSW wrapper: exact enough on a tiny set, persisted, and used above the threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragworks.retrieval.ann import HnswIndex, ann_available

pytestmark = pytest.mark.skipif(not ann_available(), reason="faiss-cpu is not installed")


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_matches_exact_search_on_a_small_set() -> None:
    vectors, queries = _unit(500, 16, 0), _unit(20, 16, 1)
    index = HnswIndex.build(vectors)
    for q in queries:
        exact = np.argsort(-(vectors @ q))[:10]
        found = index.search(q, 10)
        assert found.shape == (10,)
        assert len(np.intersect1d(found, exact)) >= 9


def test_hnsw_returns_fewer_rows_than_depth_when_small() -> None:
    index = HnswIndex.build(_unit(5, 8, 0))
    assert sorted(index.search(_unit(1, 8, 1)[0], 50).tolist()) == [0, 1, 2, 3, 4]


def test_hnsw_save_and_load_round_trip(tmp_path: Path) -> None:
    vectors = _unit(200, 8, 0)
    index = HnswIndex.build(vectors)
    index.save(tmp_path / "ann.faiss")
    loaded = HnswIndex.load(tmp_path / "ann.faiss")
    q = vectors[17]
    assert loaded.search(q, 1).tolist() == [17]
    assert loaded.search(q, 10).tolist() == index.search(q, 10).tolist()


def test_local_index_uses_ann_above_threshold() -> None:
    from ragworks.retrieval import Chunk, LocalIndex

    index = LocalIndex(embeddings="hashing", ann_threshold=3)
    index.upsert([Chunk(id=str(i), text=f"document number {i} about topic {i % 3}") for i in range(8)])
    docs = index.search("document number 5", k=3, mode="dense")
    assert docs[0].id == "5"
    assert index._ann is not None


def test_upsert_grows_the_graph_and_delete_rebuilds_it() -> None:
    from ragworks.retrieval import Chunk, LocalIndex

    index = LocalIndex(embeddings="hashing", ann_threshold=3)
    index.upsert([Chunk(id=str(i), text=f"document number {i} about topic {i % 3}") for i in range(8)])
    index.search("document", k=1, mode="dense")
    graph = index._ann
    assert graph is not None
    index.upsert([Chunk(id="new", text="glaciers carve valleys slowly")])
    assert index._ann is graph  # grown in place, not rebuilt
    assert index.search("glaciers carve valleys", k=1, mode="dense")[0].id == "new"
    index.delete(["new"])
    assert "new" not in {d.id for d in index.search("glaciers carve valleys", k=5, mode="dense")}
