"""The offline judge: sentence-level lexical support, plus MiniLM similarity with the dense extra.

Faithfulness counts the words of the answer that the contexts do not contain (stemmed, numbers
normalised, stop words weighted 0.5): score = supported share x exp(-novel / 3). Calibrated on the
BEGIN dev split (see `benchmarks/offline_judge_begin.py`), where it beats plain word overlap. With
MiniLM, the score is blended geometrically (weight 0.2) with each sentence's best cosine to a
context sentence, which forgives paraphrases.

Answer relevance scores only the answer's prose (see `ragworks.eval._answer_form`): a refusal, a
bare command or code, metadata or a pointer elsewhere scores 0, and prose that only restates the
question at most ECHO_CAP; measured in `benchmarks/answer_relevance_nonanswers.py`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from ragworks.eval._answer_form import is_yes_no, split_answer, type_match
from ragworks.eval.judges import Judgement

_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[#>*\-+]+|\d+[.)])\s*")
_CITATION = re.compile(r"\[(?:\d+(?:\s*[,;-]\s*\d+)*|[^\]\n]{1,80}\.(?:md|txt|html|pdf))\]")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = dict(
    zip(
        (*_NUMBER_WORDS, "eleven", "twelve"),
        [str(i) for i in range(13)],
        strict=True,
    )
)
_FILLERS = {
    "yes",
    "yeah",
    "oh",
    "well",
    "think",
    "know",
    "really",
    "like",
    "s",
    "t",
    "m",
    "re",
    "ve",
    "ll",
    "d",
}
_STOP = frozenset(STOPWORDS_EN) | _FILLERS
_QUESTION_WORDS = frozenset(
    {"how", "what", "which", "who", "whom", "whose", "why", "when", "where", "can", "could", "would"}
    | {"should", "will", "may", "might", "must", "tell", "explain", "describe", "please", "me", "about"}
    | {"does", "do", "did", "is", "are"}
)
_NONCOMMITTAL = re.compile(
    r"\b(i (?:could not|couldn't|cannot|can't|do not|don't) (?:find|know|say|answer|tell)|"
    r"no (?:information|mention|details?) (?:about|on|of)|not (?:mentioned|covered|stated) in the "
    r"(?:documents?|context|sources?)|unable to (?:find|answer|determine))",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:(?:do not|don't|does not|doesn't) have (?:enough |any |the )?(?:information|details|data)|"
    r"(?:am|are|is) not able to (?:answer|find|say|help)|cannot (?:answer|help with|provide)|"
    r"(?:no|not enough|insufficient) information (?:on|about|in|to)|"
    r"(?:sources?|documents?|context|passages?) (?:do|does) not "
    r"(?:say|mention|contain|cover|provide|include))",
    re.IGNORECASE,
)
_GENERIC = frozenset(
    {"question", "questions", "ask", "asked", "asks", "answer", "topic", "interesting", "good", "great"}
    | {"concerns", "concern", "regarding", "you", "your", "we", "i", "that", "this", "it", "so"}
)
"""Words about the exchange itself, which add nothing to the question when an answer restates it."""
STOP_WEIGHT = 0.5
"""Weight of a stop word in the novel-word count (content words weigh 1)."""
NOVEL_SCALE = 3.0
"""exp(-novel / NOVEL_SCALE): each unsupported content word costs about a third."""
DENSE_WEIGHT = 0.2
"""Geometric weight of the MiniLM similarity when the dense extra is used."""
ECHO_CAP = 0.02
"""The most an answer scores when its prose only restates the question."""
INFORMATIVE_FLOOR = 0.05
"""The least prose that says something beyond the question scores: above every non-answer."""
SHORT_FLOOR = 0.6
"""The least a short answer (SHORT_WORDS or fewer) of the type the question asks for scores."""
SHORT_WORDS = 8
FACT_COVERAGE = 0.6
"""A fact counts as stated when this share of its content words appear in the answer."""


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    # Any: PyStemmer has no type hints
    import Stemmer

    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    """Lower-cased words with number words written as digits."""
    return [_NUMBERS.get(w, w) for w in _WORD.findall(text.lower())]


def stems(tokens: Sequence[str]) -> list[str]:
    """Snowball stems of tokens."""
    return list(_stemmer().stemWords(list(tokens)))


def content_stems(text: str, *, drop: frozenset[str] = frozenset()) -> set[str]:
    """The stems of the non-stop words of a text."""
    return set(stems([w for w in words(text) if w not in _STOP and w not in drop]))


def sentences(text: str) -> list[str]:
    """Split text into sentences, dropping list markers, citations and empty pieces."""
    text = _CITATION.sub("", text)
    parts = (_BULLET.sub("", p).strip() for p in _SENTENCE.split(text))
    return [p for p in parts if _WORD.search(p)]


def is_noncommittal(answer: str) -> bool:
    """True when the answer only declines to answer ("I could not find this in the documents.")."""
    parts = sentences(answer)
    short = len(words(answer)) <= 25
    return short and bool(parts) and all(_NONCOMMITTAL.search(p) for p in parts)


def is_refusal(answer: str) -> bool:
    """True when the answer only declines, in the narrow wording of `is_noncommittal` or a wider one.

    Faithfulness keeps the narrow one: a refusal it recognises scores 1.0 there, so it recognises few.
    """
    parts = sentences(answer)
    short = len(words(answer)) <= 25
    matched = short and bool(parts) and all(_NONCOMMITTAL.search(p) or _REFUSAL.search(p) for p in parts)
    return matched or is_noncommittal(answer)


def novel_words(sentence: str, known: set[str]) -> tuple[float, float, list[str]]:
    """Weighted count of words not in `known` (stems), the total weight, and the novel words."""
    tokens = words(sentence)
    novel, total, missing = 0.0, 0.0, []
    for token, stem in zip(tokens, stems(tokens), strict=True):
        weight = STOP_WEIGHT if token in _STOP else 1.0
        total += weight
        if stem not in known:
            novel += weight
            if token not in _STOP:
                missing.append(token)
    return novel, total, missing


def lexical_support(novel: float, total: float) -> float:
    """The lexical support score from novel and total word weights."""
    if total <= 0:
        return 1.0
    return (1.0 - novel / total) * math.exp(-novel / NOVEL_SCALE)


class OfflineJudge:
    """A judge that needs no model: lexical support, and MiniLM similarity when available."""

    def __init__(self, *, dense: bool | None = None) -> None:
        from ragworks.embeddings import dense_available

        self.dense = dense_available() if dense is None else dense
        self.name = "offline:dense" if self.dense else "offline:lexical"
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Load the embedding model now, on the calling thread, before judging from a pool (dense only).

        Its first load imports torch and transformers; on a judge thread while MLflow registers
        its autologging import hooks, those imports deadlock (see `ragworks.eval._prefetch`).
        """
        if self.dense:
            self._embed(["warm-up"])

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embed the sentences of many texts in one batch, so later judgements reuse them (dense only)."""
        if self.dense:
            self._embed([s for t in texts for s in sentences(t)] + list(texts))

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        from ragworks.embeddings import MiniLMEmbedder

        with self._lock:
            todo = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if todo:
            vectors = MiniLMEmbedder().encode(todo)
            with self._lock:
                if len(self._vectors) > 50_000:  # keep memory bounded on long suites
                    self._vectors.clear()
                self._vectors.update(zip(todo, vectors, strict=True))
        with self._lock:
            return np.stack([self._vectors[t] for t in texts])

    def _best_cosines(self, texts: Sequence[str], against: Sequence[str]) -> list[float]:
        if not texts or not against:
            return [0.0] * len(texts)
        sims = self._embed(texts) @ self._embed(against).T
        return [max(0.0, float(s)) for s in sims.max(axis=1)]

    def faithfulness(self, question: str, answer: str, contexts: Sequence[str]) -> Judgement:
        """Sentence-level support of the answer by the contexts."""
        if is_noncommittal(answer):
            return Judgement(score=1.0, rationale="The answer makes no claims (it declines to answer).")
        claims = sentences(answer)
        if not claims:
            return Judgement(score=0.0, rationale="The answer is empty.")
        if not any(c.strip() for c in contexts):
            return Judgement(score=0.0, rationale="No context was retrieved, so nothing supports the answer.")
        known = set(stems(words(" ".join(contexts))))
        stats = [novel_words(s, known) for s in claims]
        novel, total = sum(s[0] for s in stats), sum(s[1] for s in stats)
        score = lexical_support(novel, total)
        cosines: list[float] = []
        if self.dense:
            cosines = self._best_cosines(claims, [s for c in contexts for s in sentences(c)])
            weights = [max(s[1], 1e-9) for s in stats]
            score = score ** (1 - DENSE_WEIGHT) * float(np.average(cosines, weights=weights)) ** DENSE_WEIGHT
        return _faithfulness_judgement(claims, stats, cosines, score)

    def answer_relevance(self, question: str, answer: str) -> Judgement:
        """Whether the answer's prose addresses the question; non-answers score 0 or near it.

        A refusal, and an answer that is only a command, code, metadata or a pointer elsewhere,
        scores 0; prose that only restates the question at most ECHO_CAP; the rest is scored by
        question-term coverage (with MiniLM: blended with cosine), and a short answer of the type
        the question asks for (a number for "how many") gets at least SHORT_FLOOR.
        """
        if is_refusal(answer):
            return Judgement(
                score=0.0, rationale="The answer is noncommittal.", details={"noncommittal": True}
            )
        parts = split_answer(_CITATION.sub("", answer))
        if not words(parts.prose):
            kinds = " / ".join(parts.kinds) or "empty"
            return Judgement(
                score=0.0,
                rationale=f"The answer does not answer: it is only {kinds}.",
                details={"non_answer": list(parts.kinds)},
            )
        judged = self._relevance(question, parts.prose, what="answer")
        return _answer_form_judgement(question, parts.prose, parts.kinds, judged)

    def term_relevance(self, question: str, answer: str) -> Judgement:
        """The question-term score alone, refusals 0: answer relevance before the non-answer checks.

        Kept so `benchmarks/answer_relevance_nonanswers.py` measures both in one run.
        """
        if is_noncommittal(answer):
            return Judgement(
                score=0.0, rationale="The answer is noncommittal.", details={"noncommittal": True}
            )
        return self._relevance(question, answer, what="answer")

    def context_relevance(self, question: str, passage: str) -> Judgement:
        """Share of the question's topic words the passage contains (with MiniLM: blended)."""
        return self._relevance(question, passage, what="passage")

    def _relevance(self, question: str, text: str, *, what: str) -> Judgement:
        topic = content_stems(question, drop=_QUESTION_WORDS)
        found = topic & set(stems(words(text)))
        coverage = len(found) / len(topic) if topic else 1.0
        details: dict[str, Any] = {"coverage": coverage, "missing_terms": sorted(topic - found)}
        score = coverage
        if self.dense and text.strip():
            cosine = self._best_cosines([question], [text])[0]
            details["cosine"] = cosine
            score = 0.5 * coverage + 0.5 * min(1.0, max(0.0, (cosine - 0.1) / 0.5))
        rationale = f"The {what} covers {len(found)} of {len(topic)} question terms"
        if details["missing_terms"]:
            rationale += f"; missing: {', '.join(details['missing_terms'][:8])}"
        return Judgement(score=round(score, 4), rationale=rationale + ".", details=details)

    def correctness(
        self,
        question: str,
        answer: str,
        *,
        expected_response: str | None = None,
        expected_facts: Sequence[str] | None = None,
    ) -> Judgement:
        """Share of the expected facts (or the expected response's sentences) the answer states."""
        facts = list(expected_facts or []) or sentences(expected_response or "")
        if not facts:
            return Judgement(score=0.0, rationale="No expected facts or response to compare with.")
        said = set(stems(words(answer)))
        cosines = self._best_cosines(facts, sentences(answer)) if self.dense else [0.0] * len(facts)
        verdicts = []
        for fact, cosine in zip(facts, cosines, strict=True):
            needed = content_stems(fact)
            share = len(needed & said) / len(needed) if needed else 1.0
            verdicts.append(
                {"fact": fact, "present": share >= FACT_COVERAGE or cosine >= 0.75, "share": share}
            )
        missing = [str(v["fact"]) for v in verdicts if not v["present"]]
        score = 1 - len(missing) / len(facts)
        rationale = f"{len(facts) - len(missing)} of {len(facts)} expected facts stated"
        rationale += f"; missing: {'; '.join(missing)}." if missing else "."
        return Judgement(score=score, rationale=rationale, details={"facts": verdicts})


def _answer_form_judgement(
    question: str, prose: str, kinds: tuple[str, ...], judged: Judgement
) -> Judgement:
    """Cap prose that only restates the question; floor a short answer of the asked-for type."""
    novel = content_stems(prose, drop=_QUESTION_WORDS | _GENERIC) - set(stems(words(question)))
    score, rationale = judged.score, judged.rationale
    details: dict[str, Any] = {**judged.details, "non_answer": list(kinds), "new_terms": len(novel)}
    if not novel and not is_yes_no(question, prose):
        score = min(score, ECHO_CAP)
        rationale = "The answer only restates the question; it adds nothing. " + rationale
    else:
        score = max(score, INFORMATIVE_FLOOR)
    if novel and len(words(prose)) <= SHORT_WORDS:
        matched = type_match(question, prose)
        details["type_match"] = matched
        if matched and score < SHORT_FLOOR * matched:
            score = SHORT_FLOOR * matched
            rationale = f"A short answer of the type the question asks for. {rationale}"
    if kinds:
        rationale += f" Set aside as not answering: {', '.join(kinds)}."
    return Judgement(score=round(score, 4), rationale=rationale, details=details)


def _faithfulness_judgement(
    claims: list[str], stats: list[tuple[float, float, list[str]]], cosines: list[float], score: float
) -> Judgement:
    verdicts = []
    for i, (claim, (novel, total, missing)) in enumerate(zip(claims, stats, strict=True)):
        support = lexical_support(novel, total)
        verdict: dict[str, Any] = {"sentence": claim, "support": round(support, 4), "novel_words": missing}
        if cosines:
            verdict["cosine"] = round(cosines[i], 4)
        verdict["supported"] = support >= 0.5 or (bool(cosines) and cosines[i] >= 0.8)
        verdicts.append(verdict)
    unsupported = [v for v in verdicts if not v["supported"]]
    rationale = f"{len(claims) - len(unsupported)} of {len(claims)} sentences are supported by the context"
    if unsupported:
        listed = "; ".join(
            f"{v['sentence'][:120]!r} (new: {', '.join(v['novel_words'][:6])})" for v in unsupported
        )
        rationale += f". Unsupported: {listed}"
    return Judgement(
        score=round(min(1.0, max(0.0, score)), 4), rationale=rationale + ".", details={"sentences": verdicts}
    )
