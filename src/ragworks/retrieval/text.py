"""Tokenisation shared by BM25, the offline answer model and offline judges.

Lower-case words of two or more characters, English stop words removed, Snowball-stemmed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from bm25s.stopwords import STOPWORDS_EN

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_STOP = frozenset(STOPWORDS_EN)
EMPTY = "\x00"
"""Stands in for a text with no terms: bm25s fails on a corpus without any term, and the token
pattern can never produce this one, so no query matches it."""


@lru_cache(maxsize=1)
def _stemmer() -> object:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Split one text into stemmed BM25 terms."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOP]
    stemmed: list[str] = _stemmer().stemWords(words)  # type: ignore[attr-defined]
    return stemmed


def tokenize_many(texts: Iterable[str]) -> list[list[str]]:
    """Tokenise many texts; each empty result gets a placeholder so bm25s keeps the row."""
    return [tokenize(t) or [EMPTY] for t in texts]
