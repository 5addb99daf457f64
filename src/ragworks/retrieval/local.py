"""LocalIndex: an embedded hybrid index (BM25 + dense vectors) persisted in a folder; LocalRetriever over it.

The folder holds only JSON, JSONL and numpy files (no pickle); `_store` owns its layout, the
manifest's checksums, atomic swaps and the writer lock. The data files:

    chunks.jsonl          one chunk per line: id, text, metadata
    vectors.npy           float32 unit vectors, one row per chunk (absent for BM25-only indexes)
    bm25/                 the bm25s index (npy + json)
    ann.faiss             an HNSW graph, only above the ANN threshold with faiss installed

Example:
    >>> index = LocalIndex(embeddings="hashing")
    >>> index.upsert([Chunk(id="a", text="MLflow tracks experiments", metadata={"source": "a.md"})])
    >>> [d.id for d in index.search("experiments", k=1)]
    ['a']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from ragworks.config import SearchMode
from ragworks.embeddings import Embedder, get_embedder
from ragworks.errors import ConfigError, RagworksError, RetrievalError
from ragworks.retrieval import _store
from ragworks.retrieval.ann import ANN_THRESHOLD, HnswIndex, ann_available
from ragworks.retrieval.filters import compile_filters, filter_fields
from ragworks.retrieval.fusion import FusionParams, fuse_top, top_indices, union
from ragworks.retrieval.text import tokenize, tokenize_many

logger = logging.getLogger(__name__)
# bm25s forces its logger to DEBUG at import, which floods any handler an application configures.
logging.getLogger("bm25s").setLevel(logging.WARNING)

INDEX_FORMAT = _store.INDEX_FORMAT
INDEX_VERSION = _store.INDEX_VERSION
MANIFEST = _store.MANIFEST
CHUNKS = "chunks.jsonl"
VECTORS = "vectors.npy"


def index_embedder(folder: Path) -> str:
    """The embedder name a saved index records (`minilm`, `hashing`, ...), or `none` when unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return str(manifest["embedder"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """One unit of retrieval: its id, text and metadata (`source`, `chunk_index`, ...)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class BM25Params:
    """Okapi BM25 parameters (defaults tuned on SciFact train by `benchmarks/tune_fusion.py`)."""

    k1: float = 1.5
    b: float = 0.4


def text_hash(text: str) -> str:
    """Content hash used for chunk ids and the embedding cache."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LocalIndex:
    """Chunks with BM25 and dense search, metadata filters, upsert/delete, and a folder on disk."""

    def __init__(
        self,
        *,
        embeddings: str | Embedder | None = "auto",
        bm25: BM25Params | None = None,
        fusion: FusionParams | None = None,
        ann_threshold: int = ANN_THRESHOLD,
    ) -> None:
        self.embedder = get_embedder(embeddings) if isinstance(embeddings, str) else embeddings
        self.bm25_params = bm25 or BM25Params()
        self.fusion = fusion or FusionParams()
        self.ann_threshold = ann_threshold
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._metas: list[dict[str, Any]] = []
        self._rows: dict[str, int] = {}
        self._vectors: np.ndarray | None = None
        self._tokens: list[list[str]] | None = []
        self._hashes: list[str] | None = []
        self._bm25: bm25s.BM25 | None = None
        self._ann: HnswIndex | None = None
        self._fields: set[str] | None = None

    # ----------------------------------------------------------------- contents
    @property
    def embedder_name(self) -> str:
        """`minilm`, `hashing`, or `none` for a BM25-only index."""
        return self.embedder.name if self.embedder is not None else "none"

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._rows

    def ids(self) -> list[str]:
        """All chunk ids, in index order."""
        return list(self._ids)

    def get(self, ids: Iterable[str]) -> list[Chunk]:
        """The chunks with these ids (unknown ids are left out)."""
        return [self._chunk(self._rows[i]) for i in ids if i in self._rows]

    def chunks(self) -> list[Chunk]:
        """Every chunk, in index order."""
        return [self._chunk(r) for r in range(len(self))]

    def _chunk(self, row: int) -> Chunk:
        return Chunk(id=self._ids[row], text=self._texts[row], metadata=dict(self._metas[row]))

    # ----------------------------------------------------------------- writing
    def add(self, chunks: Iterable[Chunk | Document]) -> list[str]:
        """Add new chunks; an id already in the index is an error (use `upsert`)."""
        items = [_as_chunk(c) for c in chunks]
        taken = [c.id for c in items if c.id in self._rows]
        if taken:
            raise ConfigError(f"Chunk ids already in the index: {taken[:5]}. Use upsert() to replace.")
        return self.upsert(items)

    def upsert(self, chunks: Iterable[Chunk | Document], *, show_progress: bool = False) -> list[str]:
        """Insert chunks, replacing any with the same id; embeddings are reused by content hash."""
        items = list({c.id: c for c in (_as_chunk(x) for x in chunks)}.values())
        if not items:
            return []
        hashes = [text_hash(c.text) for c in items]
        vectors = self._embed([c.text for c in items], hashes, show_progress=show_progress)
        self.delete([c.id for c in items if c.id in self._rows])
        start = len(self._ids)
        for offset, c in enumerate(items):
            self._rows[c.id] = start + offset
            self._ids.append(c.id)
            self._texts.append(c.text)
            self._metas.append(dict(c.metadata))
        self._text_hashes().extend(hashes)
        self._fields = None
        if self._tokens is not None:
            self._tokens.extend(tokenize_many(c.text for c in items))
        if vectors is not None:
            base = self._vectors if self._vectors is not None else vectors[:0]
            self._vectors = np.vstack([base, vectors])
            if self._ann is not None:  # appending keeps row numbers, so the graph can grow in place
                self._ann.add(vectors)
        self._bm25 = None
        return [c.id for c in items]

    def delete(self, ids: Iterable[str]) -> int:
        """Remove chunks by id; returns how many were removed."""
        doomed = {self._rows[i] for i in ids if i in self._rows}
        if not doomed:
            return 0
        keep = [r for r in range(len(self._ids)) if r not in doomed]
        hashes = self._text_hashes()
        self._ids = [self._ids[r] for r in keep]
        self._texts = [self._texts[r] for r in keep]
        self._metas = [self._metas[r] for r in keep]
        if self._tokens is not None:
            self._tokens = [self._tokens[r] for r in keep]
        if self._vectors is not None:
            self._vectors = self._vectors[keep]
        self._hashes = [hashes[r] for r in keep]
        self._rows = {cid: r for r, cid in enumerate(self._ids)}
        self._fields = None
        # Deleting renumbers rows: both search structures are rebuilt on the next search.
        self._bm25 = None
        self._ann = None
        return len(doomed)

    def _text_hashes(self) -> list[str]:
        """Content hashes of the chunks, in row order (computed once after a load)."""
        if self._hashes is None:
            self._hashes = [text_hash(t) for t in self._texts]
        return self._hashes

    def _embed(
        self, texts: Sequence[str], hashes: Sequence[str], *, show_progress: bool
    ) -> np.ndarray | None:
        """Vectors for `texts`, reusing those of chunks already indexed with the same content."""
        if self.embedder is None:
            return None
        known: dict[str, np.ndarray] = {}
        if self._vectors is not None:
            wanted = set(hashes)
            known = {h: self._vectors[r] for r, h in enumerate(self._text_hashes()) if h in wanted}
        missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in known}
        if missing:
            fresh = self.embedder.encode(list(missing.values()), show_progress=show_progress)
            known.update(zip(missing, fresh, strict=True))
        return np.stack([known[h] for h in hashes]).astype(np.float32)

    # ----------------------------------------------------------------- searching
    def search(
        self,
        query: str,
        k: int = 5,
        filters: Mapping[str, Any] | None = None,
        *,
        mode: SearchMode = "hybrid",
        vector: Sequence[float] | np.ndarray | None = None,
        fusion: FusionParams | None = None,
    ) -> list[Document]:
        """The k best chunks for `query` as LangChain Documents, best first.

        Args:
            query: the search text.
            k: how many chunks to return.
            filters: metadata filters (see `ragworks.retrieval.filters`).
            mode: `hybrid`, `bm25` or `dense`; hybrid falls back to BM25 on a BM25-only index.
            vector: a query embedding made elsewhere (same embedder as the index), used instead of
                embedding `query` for the dense side.
            fusion: hybrid only: fusion settings for this search instead of the index's own.

        Returns:
            Documents with `id`, `metadata["score"]`, `metadata["source"]`, `metadata["chunk_index"]`.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}.")
        if mode not in ("hybrid", "bm25", "dense"):
            raise ConfigError(f"Unknown search mode {mode!r}. Available: hybrid, bm25, dense.")
        if not self._ids or (not query.strip() and vector is None):
            return []
        if (mode == "dense" or vector is not None) and self.embedder is None:
            raise ConfigError("This index has no embeddings (built with --embeddings none): use mode 'bm25'.")
        q = None if vector is None else self._checked_vector(vector)
        mask = self._mask(filters)
        if mode == "bm25" or self.embedder is None:
            rows, scores = self._search_bm25(query, k, mask)
        elif mode == "dense":
            rows, scores = self._search_dense(query, k, mask, q)
        else:
            rows, scores = self._search_hybrid(query, k, mask, q, fusion or self.fusion)
        return [self._document(int(r), float(s)) for r, s in zip(rows, scores, strict=True)]

    def fields(self) -> set[str]:
        """The metadata fields at least one chunk has."""
        if self._fields is None:
            self._fields = {name for meta in self._metas for name in meta}
        return set(self._fields)

    def _mask(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        predicate = compile_filters(filters)
        if predicate is None:
            return None
        assert filters is not None
        unknown = sorted(set(filter_fields(filters)) - self.fields())
        if unknown:  # a misspelled field would otherwise match nothing, silently
            raise ConfigError(
                f"No chunk has the metadata field{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; fields in this index: {', '.join(sorted(self.fields()))}."
            )
        return np.fromiter((predicate(m) for m in self._metas), dtype=bool, count=len(self._metas))

    def _bm25_scores(self, query: str, mask: np.ndarray | None) -> np.ndarray:
        terms = tokenize(query)
        index = self._ensure_bm25()
        ids = [index.vocab_dict[t] for t in terms if t in index.vocab_dict]
        if not ids:
            return np.zeros(len(self._ids), dtype=np.float32)
        scores: np.ndarray = index.get_scores_from_ids(ids)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        return scores

    def _search_bm25(self, query: str, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        scores = self._bm25_scores(query, mask)
        rows = top_indices(scores, k)
        rows = rows[scores[rows] > 0]
        return rows, scores[rows]

    def _query_vector(self, query: str) -> np.ndarray:
        assert self.embedder is not None
        return self.embedder.encode([query])[0]

    def _checked_vector(self, vector: Sequence[float] | np.ndarray) -> np.ndarray:
        """A caller's query vector as unit float32, or a ConfigError naming the dimensions expected."""
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        dim = self._vectors.shape[1] if self._vectors is not None else q.shape[0]
        if q.shape[0] != dim or not np.all(np.isfinite(q)):
            raise ConfigError(
                f"The query vector has {q.shape[0]} dimensions (or non-finite values); this index's "
                f"embeddings ({self.embedder_name}) have {dim}."
            )
        norm = float(np.linalg.norm(q))
        return q / norm if norm > 0 else q

    def _dense_candidates(
        self, q: np.ndarray, depth: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self._vectors is not None
        ann = self._ensure_ann() if mask is None else None
        if ann is not None:
            rows = ann.search(q, depth)
            return rows, self._vectors[rows] @ q
        scores = self._vectors @ q
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        rows = top_indices(scores, depth)
        rows = rows[np.isfinite(scores[rows])]
        return rows, scores[rows]

    def _search_dense(
        self, query: str, k: int, mask: np.ndarray | None, q: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._dense_candidates(self._query_vector(query) if q is None else q, k, mask)

    def _search_hybrid(
        self,
        query: str,
        k: int,
        mask: np.ndarray | None,
        q: np.ndarray | None = None,
        fusion: FusionParams | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self._vectors is not None
        fusion = fusion or self.fusion
        depth = max(fusion.depth, k)
        bm25_all = self._bm25_scores(query, mask)
        bm25_rows = top_indices(bm25_all, depth)
        bm25_rows = bm25_rows[bm25_all[bm25_rows] > 0]
        q = self._query_vector(query) if q is None else q
        dense_rows, _ = self._dense_candidates(q, depth, mask)
        candidates = union(bm25_rows, dense_rows)
        dense = self._vectors[candidates] @ q
        return fuse_top(candidates, bm25_all, dense, bm25_rows, dense_rows, k, fusion)

    def _document(self, row: int, score: float) -> Document:
        meta = dict(self._metas[row])
        meta["score"] = score
        return Document(id=self._ids[row], page_content=self._texts[row], metadata=meta)

    def _ensure_bm25(self) -> bm25s.BM25:
        if self._bm25 is None:
            if self._tokens is None:
                self._tokens = tokenize_many(self._texts)
            index = bm25s.BM25(k1=self.bm25_params.k1, b=self.bm25_params.b)
            index.index(self._tokens, show_progress=False)
            self._bm25 = index
        return self._bm25

    def _ensure_ann(self) -> HnswIndex | None:
        if self._vectors is None or len(self._ids) <= self.ann_threshold or not ann_available():
            return None
        if self._ann is None:
            self._ann = HnswIndex.build(self._vectors)
        return self._ann

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path, *, lock_timeout: float = _store.DEFAULT_LOCK_TIMEOUT) -> Path:
        """Write the index to a folder atomically, under the folder's writer lock (see `_store`)."""
        target = Path(path)
        _store.write_index(target, self._manifest(), self._write, lock_timeout=lock_timeout)
        return target

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": _store.INDEX_FORMAT,
            "count": len(self._ids),
            "embedder": self.embedder.spec() if self.embedder else {"name": "none", "dim": 0},
            "bm25": {"k1": self.bm25_params.k1, "b": self.bm25_params.b},
            "fusion": dataclasses.asdict(self.fusion),
        }

    def _write(self, folder: Path) -> dict[str, int]:
        """Write the data files into `folder`; returns the row count of each row file."""
        with (folder / CHUNKS).open("w", encoding="utf-8") as fh:
            for cid, text, meta in zip(self._ids, self._texts, self._metas, strict=True):
                fh.write(json.dumps({"id": cid, "text": text, "metadata": meta}, sort_keys=True) + "\n")
        rows = {CHUNKS: len(self._ids)}
        if self._vectors is not None:
            np.save(folder / VECTORS, self._vectors, allow_pickle=False)
            rows[VECTORS] = len(self._ids)
        if self._ids:
            self._ensure_bm25().save(str(folder / "bm25"), show_progress=False)
        ann = self._ensure_ann()
        if ann is not None:
            ann.save(folder / "ann.faiss")
        return rows

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> LocalIndex:
        """Read an index folder written by `save`, checking each file against the manifest.

        A missing, old or foreign folder, or a data file whose size, checksum or row count does not
        match the manifest, is an IndexFormatError naming the file and the rebuild command.
        `verify=False` checks sizes and row counts but skips the checksums.
        """
        folder = Path(path)
        return _store.read_index(folder, lambda m, data: cls._read(folder, m, data), hashes=verify)

    @classmethod
    def _read(cls, folder: Path, manifest: Mapping[str, Any], data: Path) -> LocalIndex:
        index = cls(
            embeddings=manifest["embedder"]["name"],
            bm25=BM25Params(**manifest["bm25"]),
            fusion=FusionParams(**manifest["fusion"]),
        )
        count = int(manifest["count"])
        index._read_chunks(folder, data / CHUNKS, count)
        if (data / VECTORS).exists():
            index._vectors = np.load(data / VECTORS, allow_pickle=False)
            _store.check_rows(folder, data / VECTORS, index._vectors.shape[0], count)
        elif index.embedder is not None and count:
            raise _store.damaged(folder, data / VECTORS, "the file is missing")
        index._tokens = None  # tokenised again only if the index is changed
        index._hashes = None
        if (data / "bm25").exists():
            index._bm25 = bm25s.BM25.load(str(data / "bm25"), show_progress=False)
        if (data / "ann.faiss").exists() and ann_available():
            index._ann = HnswIndex.load(data / "ann.faiss")
        return index

    def _read_chunks(self, folder: Path, path: Path, count: int) -> None:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    row = json.loads(line)
                    cid, text, meta = row["id"], row["text"], row["metadata"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise _store.damaged(folder, path, f"line {number} is not a chunk ({exc})") from None
                self._rows[cid] = len(self._ids)
                self._ids.append(cid)
                self._texts.append(text)
                self._metas.append(meta)
        _store.check_rows(folder, path, len(self._ids), count)


class LocalRetriever(BaseRetriever):
    """A LangChain retriever over a `LocalIndex`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: LocalIndex
    k: int = 5
    mode: SearchMode = "hybrid"
    filters: dict[str, Any] | None = None
    fusion_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    """Hybrid only: the dense share of the fused score (`retriever.options.fusion_weight`); None keeps
    the index's own (see `ragworks.retrieval.fusion`)."""
    tags: list[str] | None = Field(default_factory=lambda: ["ragworks", "local"])

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> LocalRetriever:
        """Open the index folder at `path`."""
        return cls(index=LocalIndex.load(path), **kwargs)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Document]:
        merged = {**(self.filters or {}), **(filters or {})} or None
        try:
            return self.index.search(
                query, k=k or self.k, filters=merged, mode=self.mode, fusion=self._fusion()
            )
        except RagworksError:
            raise
        except Exception as exc:  # a bug or a damaged index: name the backend
            raise RetrievalError(f"Local index search failed: {exc}", backend="local") from exc


    def _fusion(self) -> FusionParams | None:
        if self.fusion_weight is None:
            return None
        return dataclasses.replace(self.index.fusion, method="convex", weight_dense=self.fusion_weight)


def _as_chunk(item: Chunk | Document) -> Chunk:
    if isinstance(item, Chunk):
        return item
    cid = item.id or text_hash(item.page_content)[:32]
    return Chunk(id=cid, text=item.page_content, metadata=dict(item.metadata))
