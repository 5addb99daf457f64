"""The offline answer model as it was before sentence selection was reworked, kept for comparison.

A frozen copy of `extractive_answer` and its helpers (sentence splitting, ranking by idf-weighted
stemmed overlap, up to three sentences within half of the best score), so that
`benchmarks/offline_answers.py` can measure the old and the new model in the same run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ragworks.agents._injection import looks_like_instruction
from ragworks.agents.offline import _QUESTION_WORDS
from ragworks.agents.prompts import NOT_FOUND
from ragworks.retrieval.text import tokenize

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_BLOCK_SPLIT = re.compile(r"\n\s*\n")
_HEADING = re.compile(r"^\s*#{1,6}\s")
_LIST_ITEM = re.compile(r"^\s*(?:[>*\-+]|\d+[.)])\s+")
_WHAT_IS = re.compile(r"^\s*what\s+(?:is|are)\s+(?:an?\s+|the\s+)?(.+?)\s*\??\s*$", re.IGNORECASE)


def _passages(text: str) -> list[str]:
    out: list[str] = []
    for block in _BLOCK_SPLIT.split(text):
        lines: list[str] = []
        for line in block.splitlines():
            if _HEADING.match(line) or _LIST_ITEM.match(line):
                out.append(" ".join(lines))
                lines = [] if _HEADING.match(line) else [_LIST_ITEM.sub("", line).strip()]
                continue
            lines.append(line.strip())
        out.append(" ".join(lines))
    return [p for p in out if p]


def _sentences(source: int, text: str) -> list[tuple[int, int, str, frozenset[str]]]:
    raw = [s for p in _passages(text) for s in _SENTENCE_SPLIT.split(p)]
    return [
        (source, i, s.strip(), frozenset(tokenize(s)))
        for i, s in enumerate(raw)
        if len(s.split()) >= 3 and not looks_like_instruction(s.strip())
    ]


def _terms(text: str) -> set[str]:
    return {t for t in tokenize(text) if t not in _QUESTION_WORDS}


def _defines(sentence: str, subject: str) -> bool:
    text = re.sub(r"^(?:an?|the)\s+", "", sentence.lower())
    return text.startswith(subject) and re.match(r"\s+(?:is|are)\b", text[len(subject) :]) is not None


def legacy_answer(question: str, sources: Sequence[tuple[int, str]], *, max_sentences: int = 3) -> str:
    """The old offline answer: up to three sentences within half of the best overlap score, cited."""
    asked = _terms(question)
    sentences = [s for n, text in sources for s in _sentences(n, text)]
    if not asked or not sentences:
        return NOT_FOUND
    df: dict[str, int] = {}
    for s in sentences:
        for term in s[3] & asked:
            df[term] = df.get(term, 0) + 1
    idf = {t: math.log(1 + len(sentences) / c) for t, c in df.items()}
    scored = [
        (sum(idf[t] for t in s[3] & asked) / max(len(s[3]), 1) ** 0.25, s) for s in sentences if s[3] & asked
    ]
    if max((len(s[3] & asked) for s in sentences), default=0) * 3 < len(asked):
        return NOT_FOUND
    match = _WHAT_IS.match(question)
    if match:
        subject = match.group(1).lower()
        scored = [(score * (2.0 if _defines(s[2], subject) else 1.0), s) for score, s in scored]
    best = max(score for score, _ in scored)
    kept = sorted((x for x in scored if x[0] >= best / 2), key=lambda x: -x[0])[:max_sentences]
    chosen = sorted((s for _, s in kept), key=lambda s: (s[0], s[1]))
    seen: set[str] = set()
    parts = []
    for source, _, text, _ in chosen:
        if text in seen:
            continue
        seen.add(text)
        end = text[-1] if text[-1] in ".!?" else "."
        body = text[:-1] if text[-1] in ".!?" else text
        parts.append(f"{body} [{source}]{end}")
    return " ".join(parts)
