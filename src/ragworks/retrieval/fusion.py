"""Hybrid ranking: fuse BM25 and dense scores into one ranking.

Two methods: reciprocal-rank fusion (`rrf`, the robust floor) and a convex combination of
normalised scores (`convex`). The defaults were chosen by `benchmarks/tune_fusion.py` on the
SciFact *train* split only (809 queries); the test split is kept for `benchmarks/retrieval_beir.py`.

Example:
    >>> import numpy as np
    >>> bm25 = np.array([3.0, 0.0, 2.5])
    >>> dense = np.array([0.2, 0.9, 0.8])
    >>> bm25_rows, dense_rows = np.array([0, 2]), np.array([1, 2])
    >>> cands = union(bm25_rows, dense_rows)
    >>> rows, _ = fuse_top(cands, bm25, dense[cands], bm25_rows, dense_rows, 2, FusionParams())
    >>> [int(r) for r in rows]
    [2, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

UNRANKED = 1e9
"""The rank given to a candidate that one of the two rankings did not return."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FusionParams:
    """How BM25 and dense rankings are combined."""

    method: Literal["rrf", "convex"] = "convex"
    weight_dense: float = 0.55
    """Convex only: share of the (normalised) dense score in the fused score."""
    rrf_k: int = 60
    """RRF only: the rank offset k in 1 / (k + rank) (60, the usual value; not the tuned method)."""
    depth: int = 300
    """Candidates taken from each ranking before fusing."""
    normalize: Literal["minmax", "zscore"] = "minmax"
    """Convex only: how each score list is scaled over the candidates before mixing."""


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest scores, best first (-inf entries never come first)."""
    n = min(n, scores.shape[0])
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < scores.shape[0] else np.arange(scores.shape[0])
    return part[np.argsort(-scores[part], kind="stable")]


def ranks_of(candidates: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """0-based position of each candidate in `ranked`, `UNRANKED` where it is absent (vectorised)."""
    rank = np.full(candidates.shape[0], UNRANKED, dtype=np.float64)
    if ranked.size == 0 or candidates.size == 0:
        return rank
    order = np.argsort(ranked, kind="stable")
    pos = np.searchsorted(ranked[order], candidates)
    pos = np.minimum(pos, ranked.size - 1)
    hit = ranked[order][pos] == candidates
    rank[hit] = order[pos[hit]]
    return rank


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return np.ones_like(values) if hi > 0 else np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _zscore(values: np.ndarray) -> np.ndarray:
    std = float(values.std())
    if std < 1e-12:
        return np.zeros_like(values)
    return (values - float(values.mean())) / std


def fuse(
    candidates: np.ndarray,
    bm25: np.ndarray,
    dense: np.ndarray,
    bm25_rank: np.ndarray,
    dense_rank: np.ndarray,
    params: FusionParams,
) -> np.ndarray:
    """Fused scores for `candidates` given their BM25/dense scores and ranks (0-based, big if unranked)."""
    if params.method == "rrf":
        return 1.0 / (params.rrf_k + bm25_rank + 1.0) + 1.0 / (params.rrf_k + dense_rank + 1.0)
    scale = _zscore if params.normalize == "zscore" else _minmax
    w = params.weight_dense
    return w * scale(dense.astype(np.float64)) + (1.0 - w) * scale(bm25.astype(np.float64))


def fuse_top(
    candidates: np.ndarray,
    bm25_all: np.ndarray,
    dense: np.ndarray,
    bm25_rows: np.ndarray,
    dense_rows: np.ndarray,
    k: int,
    params: FusionParams,
) -> tuple[np.ndarray, np.ndarray]:
    """The fused top-k candidates and their fused scores, best first.

    Args:
        candidates: `union(bm25_rows, dense_rows)`.
        bm25_all: the BM25 score of every row (filtered-out rows may be -inf).
        dense: the dense score of each candidate, in `candidates` order.
        bm25_rows: the BM25 ranking, best first.
        dense_rows: the dense ranking, best first.
        k: how many rows to return.
        params: the fusion settings.
    """
    if candidates.size == 0:
        return candidates, np.zeros(0)
    bm25 = np.maximum(bm25_all[candidates], 0.0)
    bm25_rank = ranks_of(candidates, bm25_rows)
    dense_rank = ranks_of(candidates, dense_rows)
    fused = fuse(candidates, bm25, dense, bm25_rank, dense_rank, params)
    order = top_indices(fused, k)
    return candidates[order], fused[order]


def union(bm25_rows: np.ndarray, dense_rows: np.ndarray) -> np.ndarray:
    """The candidate rows of both rankings, sorted, each once."""
    return np.unique(np.concatenate([bm25_rows, dense_rows]).astype(np.int64))


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], *, k: int = 60) -> list[tuple[str, float]]:
    """Fuse rankings of ids (best first) by RRF: sum of 1 / (k + rank); ties keep first-seen order."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(dict.fromkeys(ranking)):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank + 1.0)
    return sorted(scores.items(), key=lambda item: -item[1])
