"""Choose BM25 and fusion defaults on a BEIR *train* split (never the test split).

    python benchmarks/tune_fusion.py --data /work/shared/data/scifact

Stage 1 grid-searches BM25 k1/b through `LocalIndex.search(mode="bm25")`. Stage 2 precomputes, per
query, the BM25 scores and the dense ranking of that index, then replays `fusion.fuse_top` (the exact
function `LocalIndex._search_hybrid` calls) for every fusion setting, and checks the winner through the
real `LocalIndex.search(mode="hybrid")`. The chosen values are printed; copy them into `BM25Params`
and `FusionParams`. MiniLM vectors come from the benchmark's embedding cache (`--cache`).
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _beir import DEFAULT_CACHE, BeirData, CachedEmbedder, evaluate, load_beir
from ragworks.retrieval import BM25Params, Chunk, FusionParams, LocalIndex
from ragworks.retrieval.fusion import fuse_top, top_indices, union

K = 100
K1S = (0.6, 0.8, 1.0, 1.2, 1.5, 1.8, 2.2)
BS = (0.4, 0.6, 0.75, 0.9, 1.0)
DEPTHS = (50, 100, 200, 300)
WEIGHTS = tuple(round(float(w), 2) for w in np.arange(0.1, 0.91, 0.05))
RRF_KS = (1, 5, 10, 20, 40, 60, 100)


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """Per query: BM25 score of every row, BM25 ranking, dense ranking and dense score of every row."""

    bm25_all: np.ndarray
    bm25_rows: np.ndarray
    dense_rows: np.ndarray
    dense_all: np.ndarray


def build(data: BeirData, embedder: CachedEmbedder | None, bm25: BM25Params) -> LocalIndex:
    index = LocalIndex(embeddings=embedder, bm25=bm25)
    index.upsert(Chunk(id=i, text=t) for i, t in zip(data.doc_ids, data.doc_texts, strict=True))
    return index


def run_mode(index: LocalIndex, data: BeirData, mode: str) -> tuple[float, float]:
    runs = {q: [d.id for d in index.search(t, k=K, mode=mode)] for q, t in data.queries.items()}  # type: ignore[arg-type]
    return evaluate(runs, data.qrels)


def tune_bm25(data: BeirData) -> BM25Params:
    best, best_key = BM25Params(), (-1.0, -1.0)
    print("stage 1: BM25 k1 x b (nDCG@10 / Recall@100 on train)")
    for k1, b in itertools.product(K1S, BS):
        params = BM25Params(k1=k1, b=b)
        ndcg, recall = run_mode(build(data, None, params), data, "bm25")
        print(f"  k1={k1:<4} b={b:<5} nDCG@10={ndcg:.4f} R@100={recall:.4f}", flush=True)
        if (ndcg, recall) > best_key:
            best, best_key = params, (ndcg, recall)
    print(f"  -> {best} nDCG@10={best_key[0]:.4f} R@100={best_key[1]:.4f}")
    return best


def prepare(index: LocalIndex, data: BeirData, depth: int) -> dict[str, Prepared]:
    # The same scoring calls as LocalIndex._search_hybrid (exact dense search: corpus < ANN threshold).
    vectors = index._vectors
    assert vectors is not None
    out = {}
    for qid, text in data.queries.items():
        bm25_all = index._bm25_scores(text, None)
        rows = top_indices(bm25_all, depth)
        dense_all = vectors @ index._query_vector(text)
        out[qid] = Prepared(
            bm25_all=bm25_all,
            bm25_rows=rows[bm25_all[rows] > 0],
            dense_rows=top_indices(dense_all, depth),
            dense_all=dense_all,
        )
    return out


def replay(prepared: dict[str, Prepared], data: BeirData, params: FusionParams) -> tuple[float, float]:
    runs = {}
    for qid, p in prepared.items():
        bm25_rows, dense_rows = p.bm25_rows[: params.depth], p.dense_rows[: params.depth]
        cands = union(bm25_rows, dense_rows)
        rows, _ = fuse_top(cands, p.bm25_all, p.dense_all[cands], bm25_rows, dense_rows, K, params)
        runs[qid] = [data.doc_ids[r] for r in rows]
    return evaluate(runs, data.qrels)


def fusion_grid() -> list[FusionParams]:
    grid = [FusionParams(method="rrf", rrf_k=k, depth=d) for k, d in itertools.product(RRF_KS, DEPTHS)]
    grid += [
        FusionParams(method="convex", weight_dense=w, normalize=n, depth=d)
        for n, w, d in itertools.product(("minmax", "zscore"), WEIGHTS, DEPTHS)
    ]
    return grid


def describe(p: FusionParams) -> str:
    if p.method == "rrf":
        return f"rrf k={p.rrf_k} depth={p.depth}"
    return f"convex {p.normalize} w_dense={p.weight_dense} depth={p.depth}"


def tune_fusion(index: LocalIndex, data: BeirData) -> FusionParams:
    prepared = prepare(index, data, max(DEPTHS))
    results = [(replay(prepared, data, p), p) for p in fusion_grid()]
    print("stage 2: fusion (best per family, nDCG@10 / Recall@100 on train)")
    for family in ("rrf", "minmax", "zscore"):
        fam = [
            r
            for r in results
            if family in (r[1].method, r[1].normalize) and (family == "rrf") == (r[1].method == "rrf")
        ]
        for (ndcg, recall), p in sorted(fam, key=lambda r: r[0], reverse=True)[:3]:
            print(f"  {describe(p):<40} nDCG@10={ndcg:.4f} R@100={recall:.4f}")
    (ndcg, recall), best = max(results, key=lambda r: r[0])
    print(f"  -> {describe(best)} nDCG@10={ndcg:.4f} R@100={recall:.4f}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (corpus, queries, qrels/)")
    parser.add_argument("--split", default="train", help="the split to tune on (default: train)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="MiniLM vector cache folder")
    args = parser.parse_args()
    if args.split == "test":
        parser.error("tune on the train split; test is for benchmarks/retrieval_beir.py")
    start = time.perf_counter()
    data = load_beir(args.data, args.split)
    print(f"{args.data.name}/{args.split}: {len(data.doc_ids)} docs, {len(data.queries)} queries")
    bm25 = tune_bm25(data)
    embedder = CachedEmbedder(args.cache)
    embedder.preload(data.doc_texts)
    embedder.preload(list(data.queries.values()))
    index = build(data, embedder, bm25)
    print(f"dense (MiniLM) nDCG@10={run_mode(index, data, 'dense')[0]:.4f}")
    fusion = tune_fusion(index, data)
    index.fusion = fusion
    ndcg, recall = run_mode(index, data, "hybrid")
    print(f"check via LocalIndex.search(mode='hybrid'): nDCG@10={ndcg:.4f} R@100={recall:.4f}")
    print(f"chosen: {bm25}")
    print(f"chosen: {fusion}")
    print(f"took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
