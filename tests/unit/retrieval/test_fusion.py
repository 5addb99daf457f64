"""Fusion of BM25 and dense rankings: ranks, normalisation, RRF, convex, top-k."""

from __future__ import annotations

import numpy as np
import pytest

from ragworks.retrieval.fusion import UNRANKED, FusionParams, fuse, fuse_top, ranks_of, top_indices, union


def test_top_indices_best_first_and_bounded() -> None:
    scores = np.array([0.1, 0.9, -np.inf, 0.5])
    assert top_indices(scores, 2).tolist() == [1, 3]
    assert top_indices(scores, 10).tolist() == [1, 3, 0, 2]
    assert top_indices(scores, 0).size == 0


def test_ranks_of_marks_absent_candidates() -> None:
    ranks = ranks_of(np.array([2, 5, 7, 9]), np.array([9, 2, 4]))
    assert ranks.tolist() == [1.0, UNRANKED, UNRANKED, 0.0]
    assert ranks_of(np.array([1]), np.array([], dtype=np.int64)).tolist() == [UNRANKED]


def test_union_sorted_unique() -> None:
    assert union(np.array([3, 1]), np.array([1, 2])).tolist() == [1, 2, 3]


def test_rrf_rewards_agreement() -> None:
    params = FusionParams(method="rrf", rrf_k=60)
    fused = fuse(
        np.arange(3),
        np.zeros(3),
        np.zeros(3),
        np.array([0.0, 1.0, UNRANKED]),
        np.array([0.0, UNRANKED, 1.0]),
        params,
    )
    assert fused[0] > fused[1] == pytest.approx(fused[2])


@pytest.mark.parametrize("normalize", ["minmax", "zscore"])
def test_convex_weight_moves_between_the_two_rankings(normalize: str) -> None:
    bm25, dense = np.array([3.0, 0.0, 1.0]), np.array([0.1, 0.9, 0.5])
    ranks = np.zeros(3)
    bm25_only = fuse(
        np.arange(3), bm25, dense, ranks, ranks, FusionParams(weight_dense=0.0, normalize=normalize)
    )  # type: ignore[arg-type]
    dense_only = fuse(
        np.arange(3), bm25, dense, ranks, ranks, FusionParams(weight_dense=1.0, normalize=normalize)
    )  # type: ignore[arg-type]
    assert np.argmax(bm25_only) == 0
    assert np.argmax(dense_only) == 1


def test_convex_constant_scores_do_not_divide_by_zero() -> None:
    fused = fuse(np.arange(2), np.zeros(2), np.full(2, 0.5), np.zeros(2), np.zeros(2), FusionParams())
    assert np.isfinite(fused).all()


def test_fuse_top_uses_bm25_score_of_dense_only_candidates() -> None:
    bm25_all = np.array([5.0, 0.0, 4.0, 1.0])
    dense_all = np.array([0.1, 0.2, 0.9, 0.3])
    bm25_rows, dense_rows = np.array([0]), np.array([2, 3])
    cands = union(bm25_rows, dense_rows)
    rows, scores = fuse_top(cands, bm25_all, dense_all[cands], bm25_rows, dense_rows, 2, FusionParams())
    assert rows.tolist() == [2, 0]  # row 2 is strong in both, though outside the BM25 candidates
    assert scores[0] >= scores[1]


def test_fuse_top_empty_and_masked() -> None:
    empty = np.zeros(0, dtype=np.int64)
    rows, scores = fuse_top(empty, np.zeros(3), np.zeros(0), empty, empty, 5, FusionParams())
    assert rows.size == 0 and scores.size == 0
    bm25_all = np.array([-np.inf, 2.0])
    one = np.array([1])
    rows, _ = fuse_top(one, bm25_all, np.array([0.5]), one, one, 5, FusionParams())
    assert rows.tolist() == [1]
