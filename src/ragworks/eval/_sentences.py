"""Sentences and key terms of chunk texts, for the offline suite generator.

A sentence is a run of prose (headings, code blocks and table rows are skipped); its terms are its
content words (no stop words), each weighted by how rare it is across the corpus's sources.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ragworks.retrieval.text import tokenize

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*[A-Za-z0-9]|[A-Za-z]|[,;:.!?()\"]")
# Common words that BM25's stop list keeps but that say nothing about a document's subject.
_GENERIC = frozenset(
    """about above across after again all also always among another any anything around away back
    because been before being below between both but can cannot could did does doing done down each
    either else enough even ever every few first from get gets given goes going gone got has have
    having here how however into its just keep keeps know last least less let lets like made make
    makes many may might more most much must need needs never new next none not now off often once
    one only onto other others our out over own per put rather really same see seen several shall
    should show shows since some something still such take takes than that their them then there
    these they thing things this those though through thus too two under until upon use used uses
    using very via want was way ways well were what when where whether which while who whom whose
    why will with within without would yet you your yours instead""".split()  # noqa: SIM905
)
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[`])")
_MARKUP = re.compile(r"`+|\*\*|__|\[([^\]]*)\]\([^)]*\)")
MIN_WORDS = 8
MAX_WORDS = 60


@dataclass(frozen=True, slots=True)
class Term:
    """A content word as written, its stem, and its weight (inverse document frequency)."""

    word: str
    stem: str
    weight: float


def sentences(text: str) -> list[str]:
    """The prose sentences of a text, markup stripped, between MIN_WORDS and MAX_WORDS words."""
    out = []
    for paragraph in _paragraphs(text):
        for sentence in _SPLIT.split(paragraph):
            sentence = sentence.strip()
            if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS and sentence[-1:] in ".!?":
                out.append(sentence)
    return out


def _paragraphs(text: str) -> Iterable[str]:
    """Blank-line separated blocks of prose (a list item is its own block); code, headings, tables out."""
    block: list[str] = []
    fenced = False
    for line in [*text.splitlines(), ""]:
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
        prose = bool(stripped) and not fenced and not stripped.startswith(("#", "|", ">", "```"))
        item = prose and stripped.startswith(("- ", "* "))
        if block and (not prose or item):
            yield " ".join(block)
            block = []
        if prose:
            block.append(_MARKUP.sub(lambda m: m.group(1) or "", stripped[2:] if item else stripped))


def stems(text: str) -> set[str]:
    """The set of BM25 terms of a text (what near-duplicate checks compare)."""
    return set(tokenize(text))


def source_weights(texts_by_source: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Smoothed inverse document frequency of each stem, counting sources as the documents."""
    counts: dict[str, int] = {}
    for texts in texts_by_source.values():
        for stem in set().union(*(stems(t) for t in texts)) if texts else set():
            counts[stem] = counts.get(stem, 0) + 1
    total = len(texts_by_source)
    return {stem: math.log((total + 1) / (count + 0.5)) + 1.0 for stem, count in counts.items()}


def _term(word: str, weights: Mapping[str, float]) -> Term | None:
    """The word as a term, or None for punctuation, short or generic words."""
    if len(word) < 3 or word.lower() in _GENERIC:
        return None
    stem = tokenize(word)
    if len(stem) != 1:
        return None
    # Rarer across sources weighs more; long and technical words (Name_Like, CamelCase) a little more.
    technical = 0.3 if any(c in word for c in "_-") or any(c.isupper() for c in word[1:]) else 0.0
    return Term(
        word=word, stem=stem[0], weight=weights.get(stem[0], 1.0) + 0.05 * min(len(word), 12) + technical
    )


def terms(sentence: str, weights: Mapping[str, float]) -> list[Term]:
    """The sentence's distinct content words in order, each with its weight."""
    out: list[Term] = []
    seen: set[str] = set()
    for word in _WORD.findall(sentence):
        term = _term(word, weights)
        if term is not None and term.stem not in seen:
            seen.add(term.stem)
            out.append(term)
    return out


def key_phrase(sentence: str, weights: Mapping[str, float], *, longest: int = 3) -> list[Term]:
    """The run of up to `longest` adjacent content words with the greatest total weight."""
    best: list[Term] = []
    run: list[Term] = []
    for word in [*_WORD.findall(sentence), ""]:
        term = _term(word, weights) if word else None
        if term is not None and term.stem not in {t.stem for t in run}:
            run.append(term)
            continue
        for start in range(len(run)):
            piece = run[start : start + longest]
            if sum(t.weight for t in piece) > sum(t.weight for t in best):
                best = piece
        run = []
    return best


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Every run of n lower-cased words in a text (punctuation ignored)."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Token Jaccard similarity of two term sets (0 when both are empty)."""
    return len(a & b) / len(a | b) if a or b else 0.0
