"""Approximate nearest-neighbour search (faiss HNSW) for large indexes; optional extra `ann`."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ANN_THRESHOLD = 20_000
"""Indexes with more vectors than this search an HNSW graph instead of scanning every vector."""


def ann_available() -> bool:
    """True when faiss-cpu is installed."""
    return importlib.util.find_spec("faiss") is not None


HNSW_M = 32
"""Graph degree. 16 loses too much recall on 384-d MiniLM-like vectors (0.98 @10 at efSearch 512)."""
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 512
"""Candidate list length while searching; at least twice the depth asked for. Measured on 100k
MiniLM-like unit vectors (benchmarks/retrieval_beir.py): recall@10 0.996, recall@100 0.990 vs exact,
about 4x faster than the exact scan; isotropic random vectors (the worst case) need more."""


class HnswIndex:
    """Inner-product HNSW over unit vectors; `search` returns row numbers, best first."""

    def __init__(self, index: Any, *, ef_search: int = HNSW_EF_SEARCH) -> None:  # Any: faiss.IndexHNSWFlat
        self._index = index
        self.ef_search = ef_search

    @classmethod
    def build(
        cls, vectors: np.ndarray, *, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
    ) -> HnswIndex:
        """Build the graph over all rows of `vectors` (float32, unit length)."""
        import faiss

        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        logger.info("Built HNSW index over %d vectors", vectors.shape[0])
        return cls(index)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows to the graph; their row numbers follow the existing ones."""
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, query: np.ndarray, depth: int) -> np.ndarray:
        """Row numbers of the `depth` nearest vectors to `query`."""
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, 2 * depth))  # type: ignore[attr-defined]
        _, rows = self._index.search(query.reshape(1, -1), depth, params=params)
        found: np.ndarray = rows[0]
        return found[found >= 0]

    def save(self, path: Path) -> None:
        """Write the graph to one file (faiss's own format, no pickle)."""
        import faiss

        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        """Read a graph written by `save`."""
        import faiss

        return cls(faiss.read_index(str(path)))
