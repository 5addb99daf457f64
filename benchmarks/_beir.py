"""Shared helpers for the BEIR benchmarks: data loading, trec_eval metrics, an embedding cache."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ragworks.embeddings import Embedder, MiniLMEmbedder

DEFAULT_CACHE = Path.home() / ".cache" / "ragworks-bench"

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class BeirData:
    """A BEIR folder: doc ids and texts (title + newline + text), queries and qrels of one split."""

    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: Qrels


def load_beir(folder: Path, split: str) -> BeirData:
    """Read corpus.jsonl, queries.jsonl and qrels/{split}.tsv; keep only queries that have qrels."""
    doc_ids, doc_texts = [], []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            doc_ids.append(str(row["_id"]))
            doc_texts.append(f"{row.get('title', '')}\n{row.get('text', '')}")
    qrels: Qrels = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = row["text"]
    return BeirData(doc_ids=doc_ids, doc_texts=doc_texts, queries=queries, qrels=qrels)


def ndcg_at(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    """trec_eval ndcg_cut.k: gain = relevance grade, discount log2(rank + 1), ideal from all qrels."""
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if judged.get(d, 0) > 0)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], judged: Mapping[str, int], k: int = 100) -> float:
    """trec_eval recall.k: relevant (grade > 0) docs in the top k over all relevant docs."""
    relevant = {d for d, g in judged.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Qrels) -> tuple[float, float]:
    """Mean nDCG@10 and Recall@100 over the queries in `qrels` (a missing run counts as zero)."""
    ndcg = [ndcg_at(runs.get(q, []), judged) for q, judged in qrels.items()]
    recall = [recall_at(runs.get(q, []), judged) for q, judged in qrels.items()]
    return float(np.mean(ndcg)), float(np.mean(recall))


def content_key(texts: Sequence[str], model: str) -> str:
    """A short hash of the model name and every text, in order: the cache file's key."""
    h = hashlib.sha256(model.encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()[:24]


class CachedEmbedder(Embedder):
    """MiniLM with a disk cache of vectors by text hash; texts not cached are embedded for real."""

    name: ClassVar[str] = "minilm"
    dim = 384

    def __init__(self, cache_dir: Path, *, inner: Embedder | None = None) -> None:
        self.cache_dir = cache_dir
        self.inner = inner or MiniLMEmbedder()
        self._vectors: dict[str, np.ndarray] = {}
        self.misses = 0

    def preload(self, texts: Sequence[str], *, show_progress: bool = True) -> bool:
        """Load (or compute and store) the vectors of `texts`; True when they came from disk."""
        path = self.cache_dir / f"minilm-{content_key(texts, 'all-MiniLM-L6-v2')}.npy"
        hit = path.exists()
        if hit:
            vectors = np.load(path, allow_pickle=False)
        else:
            vectors = self.inner.encode(texts, show_progress=show_progress)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, vectors, allow_pickle=False)
            tmp.replace(path)
        for t, v in zip(texts, vectors, strict=True):
            self._vectors[_key(t)] = v
        return hit

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Cached vectors where known, the inner embedder for the rest."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = [i for i, t in enumerate(texts) if _key(t) not in self._vectors]
        for i, t in enumerate(texts):
            v = self._vectors.get(_key(t))
            if v is not None:
                out[i] = v
        if missing:
            self.misses += len(missing)
            out[missing] = self.inner.encode([texts[i] for i in missing], show_progress=show_progress)
        return out


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
