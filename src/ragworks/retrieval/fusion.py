"""Hybrid ranking: fuse BM25 and dense scores into one ranking.

Two methods: reciprocal-rank fusion (`rrf`, the robust floor) and a convex combination of
normalised scores (`convex`), whose weight was tuned on the SciFact train split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class FusionParams:
    """How BM25 and dense rankings are combined."""

    method: Literal["rrf", "convex"] = "convex"
    weight_dense: float = 0.5
    """Convex only: share of the (normalised) dense score in the fused score."""
    rrf_k: int = 60
    """RRF only: the rank offset k in 1 / (k + rank)."""
    depth: int = 100
    """Candidates taken from each ranking before fusing."""


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest scores, best first (-inf entries never come first)."""
    n = min(n, scores.shape[0])
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < scores.shape[0] else np.arange(scores.shape[0])
    return part[np.argsort(-scores[part], kind="stable")]


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return np.ones_like(values) if hi > 0 else np.zeros_like(values)
    return (values - lo) / (hi - lo)


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
    w = params.weight_dense
    return w * _minmax(dense) + (1.0 - w) * _minmax(bm25)
