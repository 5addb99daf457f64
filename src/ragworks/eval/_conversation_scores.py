"""Conversation-level scores: does a later answer contradict an earlier one, are earlier facts retained.

`consistency` (no model): a later answer contradicts an earlier one when one of its sentences makes
the same claim as an earlier sentence (most content words shared: `SAME_CLAIM` of the shorter's,
at least `MIN_CLAIM_WORDS`) with the opposite polarity (one is negated: not, no, never, cannot,
...) or other numbers (number words count as digits). A conversation scores the share of its
later turns (2..n) that contradict no earlier answer; a contradiction names both sentences.

`retention` (the run's judge): a later turn's expected facts that were already said earlier in the
conversation (a user question or an answer covers `FACT_COVERAGE` of the fact's content words) are
facts the agent had to carry over; the turn scores the judge's correctness on those facts alone,
and a conversation the mean of its turns that carry any. Conversations with none get no value.

Example:
    >>> contradictions(["The index is stored on disk."], "The index is not stored on disk.")
    [('The index is stored on disk.', 'The index is not stored on disk.')]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragworks.eval._offline_judge import FACT_COVERAGE, content_stems, sentences, words
from ragworks.eval.judges import Judge

SAME_CLAIM = 0.8
"""Two sentences make the same claim when this share of the shorter's content words are shared."""
MIN_CLAIM_WORDS = 3
"""Sentences with fewer content words are too short to compare."""
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nothing", "neither", "nor", "cannot", "without", "nobody", "nowhere"}
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _negated(sentence: str) -> bool:
    tokens = _TOKEN.findall(sentence.lower())
    return sum(t in _NEGATIONS or t.endswith("n't") for t in tokens) % 2 == 1  # "not never" cancels


def _claim(sentence: str) -> set[str]:
    return {s for s in content_stems(sentence, drop=_NEGATIONS) if not _NUMBER.fullmatch(s)}


def _numbers(sentence: str) -> set[str]:
    return {w for w in words(sentence) if _NUMBER.fullmatch(w)}  # "five" and "5" are one number


def _contradict(earlier: str, later: str) -> bool:
    a, b = _claim(earlier), _claim(later)
    if min(len(a), len(b)) < MIN_CLAIM_WORDS or len(a & b) < SAME_CLAIM * min(len(a), len(b)):
        return False
    numbers_a, numbers_b = _numbers(earlier), _numbers(later)
    return _negated(earlier) != _negated(later) or bool(numbers_a and numbers_b and numbers_a != numbers_b)


def contradictions(earlier_answers: Sequence[str], answer: str) -> list[tuple[str, str]]:
    """The (earlier sentence, later sentence) pairs of `answer` that contradict an earlier answer."""
    earlier = [s for text in earlier_answers for s in sentences(text)]
    return [(e, s) for s in sentences(answer) for e in earlier if _contradict(e, s)]


def consistency(answers: Sequence[str]) -> tuple[float, str] | None:
    """The share of turns 2..n contradicting no earlier answer, and why; None for one turn."""
    if len(answers) < 2:
        return None
    found = [
        (turn, pairs)
        for turn in range(1, len(answers))
        if (pairs := contradictions(answers[:turn], answers[turn]))
    ]
    score = 1 - len(found) / (len(answers) - 1)
    if not found:
        return score, f"No later answer contradicts an earlier one ({len(answers)} turns)."
    turn, pairs = found[0]
    earlier, later = pairs[0]
    return score, f"Turn {turn + 1} contradicts an earlier answer: {later!r} vs {earlier!r}."


def carried_facts(facts: Sequence[str], earlier_texts: Sequence[str]) -> list[str]:
    """The facts already said earlier in the conversation (by the user or in an answer)."""
    said = set().union(*(content_stems(t) for t in earlier_texts)) if earlier_texts else set()
    carried = []
    for fact in facts:
        needed = content_stems(fact)
        if needed and len(needed & said) / len(needed) >= FACT_COVERAGE:
            carried.append(fact)
    return carried


def retention(
    judge: Judge, question: str, answer: str, facts: Sequence[str], earlier_texts: Sequence[str]
) -> tuple[float, str] | None:
    """The judge's correctness of `answer` on the facts carried over from earlier turns; None if none are."""
    carried = carried_facts(facts, earlier_texts)
    if not carried:
        return None
    judgement = judge.correctness(question, answer, expected_response=None, expected_facts=carried)
    return judgement.score, f"carried over {len(carried)} fact(s): {judgement.rationale}"
