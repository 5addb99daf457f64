"""What an answer is made of: prose that could answer, or a non-answer (code, metadata, a pointer, a refusal).

Answer relevance by counting question terms rewards text that merely names the topic: "See the
blog post on X", `pip install x`, "Title: X | id: 42", "You asked: ...". This module splits an
answer into lines and sentences and sets aside what cannot answer (a command or code block, a
metadata record, a pointer elsewhere), so the judge scores only the prose left. It also says when
the prose adds nothing beyond the question, and whether a short answer has the type the question
asks for (a name for "who", a number for "how many").

Example:
    >>> split_answer("See the blog post on BM25.").kinds
    ('pointer',)
    >>> split_answer("Run it.\\n```bash\\npip install x\\n```").prose
    'Run it.'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_URL = re.compile(r"https?://\S+|www\.\S+")
_PROMPT = re.compile(r"^\s*(?:\$|>>>|#!|%|PS>)\s*")
_COMMANDS_TEXT = (
    "pip pip3 uv poetry conda npm npx yarn pnpm brew apt apt-get yum dnf curl wget git docker kubectl "
    "helm python python3 cargo cmake cd ls sudo chmod mkdir rm cp mv ssh mlflow ragworks"
)
_COMMANDS = frozenset(_COMMANDS_TEXT.split())
"""Shell tools; a line is a command when it starts with one (lower case) and has arguments."""
_SOURCE_CODE = re.compile(
    r"^\s*(?:from [\w.]+ import |import [\w., ]+$|def \w+\(|class \w+[:(]|"
    r"(?:SELECT|INSERT|UPDATE|DELETE|CREATE|WITH)\s)"
)
_CODE_CHARS = set("{}()[]=;|&<>$\\`")
_METADATA_KEY = re.compile(
    r"^\s*(?:[-*]\s*)?(?:source|sources|title|section|id|doc|doc_id|document|url|link|chunk|score|topic|"
    r"author|date|updated|last modified|modified|created|page|file|filename|path|tags?|category|version|"
    r"metadata|uri|doc_uri)\s*[:=]\s*\S",
    re.IGNORECASE,
)
_FILE = re.compile(r"\b[\w-]+\.(?:md|markdown|html?|pdf|txt|json|csv|ya?ml|py|ipynb|docx?)\b", re.IGNORECASE)
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_POINTER_VERB = re.compile(
    r"\b(?:see|refer to|check(?: out)?|read|visit|consult|look at|go to|head (?:over )?to|"
    r"(?:can|will) find|find (?:more|everything|details|out more)|learn more|more (?:details|information|"
    r"info)|for (?:more|details|further))\b",
    re.IGNORECASE,
)
_POINTER_NOUN = re.compile(
    r"\b(?:blog|post|article|page|docs?|documentation|guide|link|linked|section|faq|website|site|wiki|"
    r"readme|manual|tutorial|here|below|above|url|reference|chapter|notebook|video)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MAX_POINTER_WORDS = 25


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerParts:
    """An answer split into the prose that could answer and the kinds of non-answer set aside."""

    prose: str
    """The sentences left once code, metadata and pointers are set aside."""
    kinds: tuple[str, ...]
    """The non-answer kinds found, in order: `code`, `metadata`, `pointer`."""


def _is_code(line: str) -> bool:
    stripped = line.strip()
    if _PROMPT.match(line):
        return True
    tokens = stripped.split()
    if tokens and tokens[0] in _COMMANDS and len(tokens) > 1 and not stripped.endswith((".", "?", "!")):
        return True
    if _SOURCE_CODE.match(stripped):
        return True
    symbols = sum(ch in _CODE_CHARS for ch in stripped)
    return len(stripped) > 0 and symbols / len(stripped) > 0.08 and not stripped.endswith(".")


def _is_metadata(line: str) -> bool:
    stripped = line.strip()
    if _METADATA_KEY.match(stripped) or ("|" in stripped and stripped.count(":") >= 2):
        return True
    if stripped[:1] in "{[" and stripped[-1:] in "}]":
        try:
            json.loads(stripped)
            return True
        except ValueError:
            pass
    # A file name or an ISO date in a line that reads as a record (fields, no full stop), not a sentence.
    record = ("," in stripped or "|" in stripped) and not stripped.endswith(".")
    return record and bool(_FILE.search(stripped) or _DATE.search(stripped))


def _is_pointer(sentence: str) -> bool:
    text = _URL.sub(" url ", sentence)
    if _URL.search(sentence) and not re.search(r"[A-Za-z]{2,}", _URL.sub("", sentence)):
        return True  # a bare link
    short = len(text.split()) <= _MAX_POINTER_WORDS
    return short and bool(_POINTER_VERB.search(text)) and bool(_POINTER_NOUN.search(text))


def split_answer(answer: str) -> AnswerParts:
    """Set aside code blocks, command lines, metadata records and pointers; keep the prose."""
    kinds: list[str] = []
    text = answer
    if _FENCE.search(text):
        kinds.append("code")
        text = _FENCE.sub("\n", text)
    prose_lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        kind = "code" if _is_code(line) else "metadata" if _is_metadata(line) else None
        if kind:
            kinds.append(kind)
        else:
            prose_lines.append(line.strip())
    kept = []
    for sentence in _SENTENCE.split(" ".join(prose_lines)):
        if sentence.strip() and _is_pointer(sentence):
            kinds.append("pointer")
        elif sentence.strip():
            kept.append(sentence.strip())
    return AnswerParts(prose=" ".join(kept), kinds=tuple(dict.fromkeys(kinds)))


_YES_NO_QUESTION = re.compile(
    r"^\s*(?:is|are|was|were|do|does|did|can|could|will|would|should|has|have|had|must|may)\b", re.I
)
_YES_NO_ANSWER = re.compile(r"^\s*(?:yes|no|not|never|always|correct|true|false)\b", re.IGNORECASE)
_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
    r"hundred|thousand|million|billion|dozen|half|several|few)\b",
    re.IGNORECASE,
)
_TIME = re.compile(
    r"\d|\b(?:january|february|march|april|may|june|july|august|september|october|november|december|"
    r"century|centuries|decade|year|years|ago|today|yesterday|spring|summer|autumn|winter|bc|ad)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"\b[A-Z][\w'-]+")
_ASKS = (
    (
        re.compile(
            r"\bhow (?:many|much|long|old|far|big|large|often)\b|\bwhat (?:percentage|number|amount)\b", re.I
        ),
        _NUMBER,
    ),
    (
        re.compile(
            r"\bwhen\b|\bwhat (?:year|century|decade|date|time|day|month|period)\b|\bin which year\b", re.I
        ),
        _TIME,
    ),
    (re.compile(r"\b(?:who|whom|whose|where)\b", re.I), _NAME),
)
_WHAT_WHICH = re.compile(r"\b(?:what|which)\b", re.IGNORECASE)


def is_yes_no(question: str, answer: str) -> bool:
    """True when an answer needs no word the question lacks: yes / no to a yes / no question, or a
    short pick of one option of an "A or B?" question."""
    if _YES_NO_QUESTION.match(question) and _YES_NO_ANSWER.match(answer):
        return True
    return bool(re.search(r"\bor\b", question, re.IGNORECASE)) and len(answer.split()) <= 6


def type_match(question: str, answer: str) -> float:
    """How well a short answer has the type the question asks for: 1 (a number for "how many"),
    0.8 (a name or number for "what" / "which"), 0 (no type asked, or not matched)."""
    for asks, expected in _ASKS:
        if asks.search(question):
            return 1.0 if expected.search(answer) else 0.0
    if _WHAT_WHICH.search(question) and (_NAME.search(answer) or _NUMBER.search(answer)):
        return 0.8
    return 0.0
