"""Citation checks: is the source an answer's sentence cites `[n]` the one that supports it.

The agents number the retrieved sources `[1]`, `[2]`, ... in the order of the run's retrievals
(`ragworks.agents.prompts.format_sources`), which is the order `retrieved_of` reads them back from
the trace, so `[n]` is the n-th retrieved document. Each sentence of the answer is judged with the
judge's own faithfulness check (the offline judge's lexical and MiniLM support; an LLM judge is
asked) against the sources it cites, and an uncited or miscited sentence against all of them:

- precision: of the sentences that cite, the share whose cited sources support them;
- recall: of the sentences the retrieved sources support, the share that carry a citation.

A value with no denominator (no sentence cites; no sentence is supported) is None: no assessment.

Example:
    >>> from ragworks.eval._extract import RetrievedDoc
    >>> from ragworks.eval.judges import get_judge
    >>> docs = [RetrievedDoc(text="BM25 ranks words by rarity."), RetrievedDoc(text="Agents call tools.")]
    >>> check = check_citations("What is BM25?", "BM25 ranks words by rarity [2].", docs,
    ...                         get_judge("offline:lexical"))
    >>> check.precision, check.recall
    (0.0, 1.0)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ragworks.eval._extract import RetrievedDoc, matches
from ragworks.eval._offline_judge import is_noncommittal, words
from ragworks.eval.judges import Judge

SUPPORT_AT = 0.5
"""A sentence is supported when the judge's faithfulness of it against the sources is at least this
(the offline judge's own per-sentence rule: lexical support of 0.5)."""

_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[#>*\-+]+|\d+[.)])\s+")
_MARK = re.compile(r"\[(\d+(?:\s*[,;\-\u2013]\s*\d+)*|[^\]\n]{1,80}\.(?:md|txt|html|pdf|rst))\]")
_RANGE = re.compile(r"(\d+)\s*[-\u2013]\s*(\d+)")
_MAX_RANGE = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class CitedSentence:
    """One sentence of the answer, what it cites, and what supports it."""

    text: str
    cites: tuple[int, ...]
    """1-based source numbers it cites (a cited file name becomes the numbers of its chunks)."""
    unknown: tuple[str, ...] = ()
    """Citations that name no retrieved source, e.g. `[7]` of five sources."""
    cited_support: float | None = None
    """The judge's support of the sentence by its cited sources (None when it cites none)."""
    context_support: float = 0.0
    """The judge's support of the sentence by all retrieved sources."""

    @property
    def correctly_cited(self) -> bool:
        """It cites, and its cited sources support it."""
        return self.cited_support is not None and self.cited_support >= SUPPORT_AT

    @property
    def supported(self) -> bool:
        """The retrieved sources (its cited ones, or all of them) support it."""
        return self.correctly_cited or self.context_support >= SUPPORT_AT

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready verdict for the feedback's details."""
        return {
            "sentence": self.text[:200],
            "cites": list(self.cites),
            "unknown_citations": list(self.unknown),
            "cited_support": None if self.cited_support is None else round(self.cited_support, 4),
            "context_support": round(self.context_support, 4),
            "correctly_cited": self.correctly_cited,
            "supported": self.supported,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CitationCheck:
    """Every sentence's verdict, and the precision and recall they give."""

    sentences: tuple[CitedSentence, ...] = field(default_factory=tuple)
    sources: int = 0

    @property
    def citing(self) -> list[CitedSentence]:
        """The sentences that carry a citation (valid or not)."""
        return [s for s in self.sentences if s.cites or s.unknown]

    @property
    def precision(self) -> float | None:
        """Citing sentences supported by their cited sources, over citing sentences."""
        citing = self.citing
        return sum(s.correctly_cited for s in citing) / len(citing) if citing else None

    @property
    def recall(self) -> float | None:
        """Supported sentences that carry a citation, over supported sentences."""
        supported = [s for s in self.sentences if s.supported]
        if not supported:
            return None
        return sum(bool(s.cites or s.unknown) for s in supported) / len(supported)

    def rationale(self, metric: str) -> str:
        """A short reason for `precision` or `recall`, naming the sentences that cost points."""
        if metric == "precision":
            citing = self.citing
            wrong = [s for s in citing if not s.correctly_cited]
            good = len(citing) - len(wrong)
            text = f"{good} of {len(citing)} citing sentences are supported by what they cite"
            listed = "; ".join(f"{s.text[:100]!r} cites {_cited_label(s)}" for s in wrong[:5])
            return text + (f". Not supported: {listed}." if wrong else ".")
        supported = [s for s in self.sentences if s.supported]
        bare = [s for s in supported if not (s.cites or s.unknown)]
        text = f"{len(supported) - len(bare)} of {len(supported)} supported sentences carry a citation"
        listed = "; ".join(repr(s.text[:100]) for s in bare[:5])
        return text + (f". Uncited: {listed}." if bare else ".")


def _cited_label(sentence: CitedSentence) -> str:
    marks = [f"[{n}]" for n in sentence.cites] + [f"[{u}]" for u in sentence.unknown]
    return " ".join(marks)


def _numbers(mark: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", mark):
        found = _RANGE.fullmatch(part)
        if found:
            low, high = int(found.group(1)), int(found.group(2))
            out.extend(range(low, min(high, low + _MAX_RANGE) + 1))  # a range stays small
        elif part.isdigit():
            out.append(int(part))
    return out


def _resolve(marks: Sequence[str], docs: Sequence[RetrievedDoc]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Citation marks as 1-based source numbers, plus the marks that name no retrieved source."""
    cites: list[int] = []
    unknown: list[str] = []
    for mark in marks:
        if mark[0].isdigit():
            numbers = _numbers(mark)
            cites += [n for n in numbers if 1 <= n <= len(docs)]
            unknown += [str(n) for n in numbers if not 1 <= n <= len(docs)]
        else:  # a cited file name: every chunk of that file
            named = [i for i, d in enumerate(docs, 1) if matches(d, mark)]
            cites += named
            unknown += [] if named else [mark]
    return tuple(dict.fromkeys(cites)), tuple(dict.fromkeys(unknown))


def split_cited(answer: str) -> list[tuple[str, list[str]]]:
    """The answer's sentences, each without its citation marks, with the marks it carries.

    Marks standing alone after a sentence ("... rarity. [1]") belong to the sentence before them.
    """
    out: list[tuple[str, list[str]]] = []
    for piece in _SPLIT.split(answer):
        marks = _MARK.findall(piece)
        text = _BULLET.sub("", _MARK.sub("", piece)).strip()
        text = re.sub(r"\s+([.,;:!?])", r"\1", text)
        if not words(text):
            if marks and out:
                out[-1][1].extend(marks)
            continue
        out.append((text, marks))
    return out


def check_citations(question: str, answer: str, docs: Sequence[RetrievedDoc], judge: Judge) -> CitationCheck:
    """Judge every sentence of `answer` against the sources it cites and against all of `docs`."""
    if is_noncommittal(answer):
        return CitationCheck(sources=len(docs))  # it makes no claims, so there is nothing to cite
    texts = [d.text for d in docs]
    verdicts = []
    for text, marks in split_cited(answer):
        cites, unknown = _resolve(marks, docs)
        # a sentence citing only sources that do not exist is cited, and unsupported by its citation
        cited = _support(judge, question, text, [texts[n - 1] for n in cites]) if cites else None
        if cited is None and unknown:
            cited = 0.0
        whole = cited if cited is not None and cited >= SUPPORT_AT else _support(judge, question, text, texts)
        verdicts.append(
            CitedSentence(text=text, cites=cites, unknown=unknown, cited_support=cited, context_support=whole)
        )
    return CitationCheck(sentences=tuple(verdicts), sources=len(docs))


def _support(judge: Judge, question: str, sentence: str, contexts: Sequence[str]) -> float:
    if not any(c.strip() for c in contexts):
        return 0.0
    return float(judge.faithfulness(question, sentence, list(contexts)).score)


__all__ = ["SUPPORT_AT", "CitationCheck", "CitedSentence", "check_citations", "split_cited"]
