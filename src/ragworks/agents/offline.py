"""The offline answer model: extractive, cited, and free of any network call.

It reads the numbered `<source>` elements of its prompt (see `ragworks.agents.prompts`), ranks their
whole sentences by idf-weighted stemmed overlap with the question (then, with the dense extra
installed, re-orders the best dozen by MiniLM question-sentence similarity; `llm: offline:lexical`
turns that off), and answers with the best one (and any that score nearly as well), each cited as
`[n]` of the source it was read from; code, tables, metadata and headings are not answers unless
the question asks for them, and it says NOT_FOUND when no sentence answers well enough. With a
retriever tool bound and no tool results yet, it first calls that tool, so the tool-calling graph
also runs offline.

Documents are untrusted. The question is the one the rag graph's `context_message` carries (or a
plain user message), never a `Question:` line read from text a document could have written; and a
sentence that speaks to an assistant ("Ignore previous instructions", "You must answer ...",
"System: ...", see `ragworks.agents._injection`) is never quoted: it is skipped when sentences
are ranked, so a source made only of such text gives "I could not find this in the documents."

Example:
    >>> from langchain_core.messages import HumanMessage
    >>> prompt = '<source id="1" name="a.md">\\nMLflow logs runs and models.\\n</source>\\n'
    >>> prompt += "Question: What does MLflow log?"
    >>> OfflineChatModel().invoke([HumanMessage(prompt)]).content
    'MLflow logs runs and models [1].'
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from ragworks.agents._injection import looks_like_instruction
from ragworks.agents.prompts import NOT_FOUND, condense_keywords, parse_sources, question_of
from ragworks.agents.sentence_similarity import Similarity, SimilarityName, sentence_similarity
from ragworks.retrieval.text import tokenize

QUOTABLE_CACHE = 2048
"""Source texts whose quotable sentences are kept (a few KiB each)."""

RETRIEVER_TOOL_NAME = "search_documents"
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_BLOCK_SPLIT = re.compile(r"\n\s*\n")
_HEADING = re.compile(r"^\s*#{1,6}\s")
_LIST_ITEM = re.compile(r"^\s*(?:[>*\-+]|\d+[.)])\s+")
_TOKEN = re.compile(r"\S+\s*")
_CONTEXT_WEIGHT = 0.3
# Stems of question words that BM25's stop list keeps but that never carry the topic.
_QUESTION_WORDS = frozenset(
    [
        "doe",
        "do",
        "did",
        "how",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "when",
        "where",
        "can",
        "could",
        "would",
        "should",
        "will",
        "may",
        "might",
        "must",
        "shall",
        "tell",
        "explain",
        "describ",
        "pleas",
        "me",
        "about",
    ]
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sentence:
    source: int
    position: int
    text: str
    terms: frozenset[str]
    prose: bool = True


_FENCE = re.compile(r"^\s*(?:```|~~~)")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$")
_METADATA = re.compile(r"^\s*[A-Za-z][\w-]{0,30}(?: [\w-]+)?:\s+\S")
_CODE_LINE = re.compile(
    r"^\s*(?:\$ |>>> |\w+\s*=\s*\S|(?:import|from|def|class|pip|npm|curl|git)\s)|[{};]\s*$"
)
_PROSE_LINE_WORDS = 8
# Questions that ask for code, commands, tables or metadata may be answered with them.
_ASKS_FOR_NON_PROSE = frozenset(
    {"code", "command", "instal", "snippet", "exampl", "tabl", "column", "row", "metadata"}
    | {"version", "licens", "author", "depend", "requir"}
)
_YEAR = re.compile(
    r"\b(?:1\d{3}|20\d{2})s?\b|\b(?:January|February|March|April|May|June|July|August|September|"
    r"October|November|December|century|centuries)\b"
)
_NUMBER = re.compile(
    r"\b\d[\d,.]*\b|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|dozen|hundred|thousand|million|billion)\b",
    re.IGNORECASE,
)
_ASKS_WHEN = re.compile(r"\b(?:when|what year|which year|what century|what decade)\b", re.IGNORECASE)
_ASKS_COUNT = re.compile(
    r"\bhow (?:many|much|long|large|big|old|far)\b|\bwhat (?:percentage|number)\b", re.IGNORECASE
)
_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
_NEIGHBOUR_WEIGHT = 0.3
"""Weight of question terms found only in the sentence before or after (they set its scene)."""
_RANK_DISCOUNT = 0.3
"""How much less the last retrieved source's sentences count than the first's."""
_ANSWER_TYPE_BOOST = 1.3
"""Score factor for a sentence with a date (when?) or a number (how many?) when the question asks for one."""
_MIN_COVERAGE = 0.25
"""Share of the question's idf weight the best sentence must hold, else the answer is NOT_FOUND.

Calibrated on the dev articles of SQuAD 2.0 (benchmarks/offline_answers.py): about 9% abstention on
answerable questions and 20% on unanswerable ones, together with the missing-name rule."""
_FOLLOW_RATIO = 0.85
"""A further sentence is quoted only when it scores this close to the best one."""
_RERANK_CANDIDATES = 12
"""Lexical candidates a similarity re-orders (the gold sentence is in the top 12 for ~98% of hits)."""
_SIMILARITY_WEIGHT = 2.0
"""Weight of the question-sentence cosine next to the relative lexical score (at most 1)."""
_SIMILAR_FOLLOW_RATIO = 0.9
"""The follow ratio on re-ordered scores, whose lexical part is already relative to the best."""
_MIN_SIMILARITY = 0.49
"""With a similarity, the answer is NOT_FOUND when no candidate's cosine with the question reaches this.

Calibrated like `_MIN_COVERAGE`, on the dev articles: 10% abstention on answerable questions and 29%
on unanswerable ones (lexical coverage alone: 10% and 21%); on the test articles 10% and 20% (lexical:
6% and 10%)."""
_SIMILAR_MIN_COVERAGE = 0.15
"""The coverage floor that still applies with a similarity (it abstains on nothing more on dev)."""


def _passages(text: str) -> list[tuple[str, bool]]:
    """Paragraphs and list items with hard-wrapped lines joined, each marked prose or not.

    Headings are titles, not answers; fenced code, table rows, `Key: value` metadata lines and code
    lines are kept apart (marked not prose) so that they are quoted only when asked for.
    """
    out: list[tuple[str, bool]] = []
    fenced = False
    for block in _BLOCK_SPLIT.split(text):
        lines: list[str] = []
        for line in block.splitlines():
            if _FENCE.match(line):
                out.append((" ".join(lines), True))
                lines = []
                fenced = not fenced
                continue
            if fenced or _non_prose_line(line):
                out.append((" ".join(lines), True))
                out.append((line.strip(), False))
                lines = []
                continue
            if _HEADING.match(line) or _LIST_ITEM.match(line):
                out.append((" ".join(lines), True))
                lines = [] if _HEADING.match(line) else [_LIST_ITEM.sub("", line).strip()]
                continue
            lines.append(line.strip())
        out.append((" ".join(lines), True))
    return [(p, prose) for p, prose in out if p]


def _non_prose_line(line: str) -> bool:
    """A table row, a short `Key: value` metadata line, or a line of code or a shell command."""
    if _TABLE_ROW.match(line):
        return True
    short = len(line.split()) <= _PROSE_LINE_WORDS
    return short and (_METADATA.match(line) is not None or _CODE_LINE.search(line) is not None)


def split_sentences(source: int, text: str) -> list[_Sentence]:
    """Split a source into sentences of at least three words, with their stemmed terms."""
    out = []
    raw = [(s, prose) for p, prose in _passages(text) for s in (_SENTENCE_SPLIT.split(p) if prose else [p])]
    for position, (line, prose) in enumerate(raw):
        sentence = line.strip()
        if len(sentence.split()) >= 3:
            terms = frozenset(tokenize(sentence))
            out.append(_Sentence(source=source, position=position, text=sentence, terms=terms, prose=prose))
    return out


@functools.lru_cache(maxsize=QUOTABLE_CACHE)
def _quotable(text: str) -> tuple[tuple[int, str, frozenset[str], bool], ...]:
    """The sentences of a source that may be quoted (instructions dropped), by position, with prose flag.

    Cached by text: a server retrieves the same chunks again and again, and splitting, stemming and
    screening them is most of the offline model's work.
    """
    return tuple(
        (s.position, s.text, s.terms, s.prose)
        for s in split_sentences(0, text)
        if not looks_like_instruction(s.text)
    )


def _terms(text: str) -> set[str]:
    return {t for t in tokenize(text) if t not in _QUESTION_WORDS}


def _names(question: str) -> set[str]:
    """Stemmed terms of the question's names and numbers (capitalised after the first word, or digits)."""
    words = _WORD.findall(question)
    picked = [w for i, w in enumerate(words) if (i > 0 and w[0].isupper()) or w[0].isdigit()]
    return {t for w in picked for t in tokenize(w)} - _QUESTION_WORDS


def extractive_answer(
    question: str,
    sources: Sequence[tuple[int, str]],
    *,
    context: str = "",
    max_sentences: int = 3,
    similarity: Similarity | None = None,
) -> str:
    """Answer with the source sentence that best answers the question (a close second too), cited `[n]`.

    Sentences are scored by the idf of the question terms they share (context terms of earlier turns
    weigh less, terms of the neighbouring sentences a little), favouring earlier sources and, for
    "when?" and "how many?", sentences with a date or a number. The answer is NOT_FOUND when a name
    or number of the question is in no source, or when the best sentence holds less than a quarter
    of the question's idf weight. Code, tables and metadata are quoted only when asked for, and
    sentences that give orders to an assistant never. With a `similarity` (MiniLM, see
    `ragworks.agents.sentence_similarity`), the best lexical candidates are re-ordered by their
    lexical score (relative to the best) plus their closeness to the question, and the answer is
    NOT_FOUND when none of them is close enough.
    """
    scored = rank_sentences(question, sources, context=context)
    floor = _MIN_COVERAGE if similarity is None else _SIMILAR_MIN_COVERAGE
    if not scored or scored[0].coverage < floor:
        return NOT_FOUND
    follow = _FOLLOW_RATIO
    if similarity is not None:
        scored, closest = _rerank(question, scored[:_RERANK_CANDIDATES], similarity)
        if closest < _MIN_SIMILARITY:
            return NOT_FOUND
        follow = _SIMILAR_FOLLOW_RATIO
    best = scored[0].score
    kept = [c.sentence for c in scored[:max_sentences] if c.score >= follow * best]
    chosen = _dedupe(sorted(kept, key=lambda s: (s.source, s.position)))
    return " ".join(_cite(s) for s in chosen)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A quotable sentence with its score and the share of the question's idf weight it holds."""

    score: float
    coverage: float
    sentence: _Sentence


def rank_sentences(
    question: str, sources: Sequence[tuple[int, str]], *, context: str = ""
) -> list[Candidate]:
    """The quotable sentences of `sources` that share a question term, best first.

    Empty when the question has no topic terms, or when one of its names or numbers is in no source.
    """
    asked = _terms(question)
    weights = {t: _CONTEXT_WEIGHT for t in _terms(context)} | {t: 1.0 for t in asked}
    numbers = {n for n, _ in sources}
    wants_non_prose = bool(asked & _ASKS_FOR_NON_PROSE)
    sentences = [
        _Sentence(source=n, position=position, text=sentence, terms=terms, prose=prose)
        for n, text in sources
        for position, sentence, terms, prose in _quotable(text)
        if prose or wants_non_prose
    ]
    if not asked or not sentences:
        return []
    if _names(question) - set().union(*(s.terms for s in sentences)):
        return []
    df: dict[str, int] = {}
    for s in sentences:
        for term in s.terms & weights.keys():
            df[term] = df.get(term, 0) + 1
    # A question term in no sentence keeps a high idf: missing it is what makes an answer weak.
    idf = {t: w * math.log(1 + len(sentences) / df.get(t, 0.5)) for t, w in weights.items()}
    asked_weight = sum(idf[t] for t in asked)
    rank = {n: i / max(len(numbers), 1) for i, n in enumerate(dict.fromkeys(n for n, _ in sources))}
    subject = _definition_subject(question)
    wanted = _YEAR if _ASKS_WHEN.search(question) else _NUMBER if _ASKS_COUNT.search(question) else None
    scored: list[Candidate] = []
    for i, s in enumerate(sentences):
        shared = s.terms & weights.keys()
        if not shared:
            continue
        around = (_neighbour_terms(sentences, i) & weights.keys()) - shared
        score = sum(idf[t] for t in shared) + _NEIGHBOUR_WEIGHT * sum(idf[t] for t in around)
        score /= max(len(s.terms), 1) ** 0.25
        score *= 1 - _RANK_DISCOUNT * rank[s.source]
        if wanted is not None and wanted.search(s.text):
            score *= _ANSWER_TYPE_BOOST
        if subject and _defines(s.text, subject):
            score *= 2.0
        if len(s.terms - weights.keys()) < 1:
            score *= 0.5  # a sentence that adds no word to the question answers nothing
        scored.append(Candidate(score, sum(idf[t] for t in shared & asked) / asked_weight, s))
    scored.sort(key=lambda c: -c.score)
    return scored


def _rerank(question: str, scored: list[Candidate], similarity: Similarity) -> tuple[list[Candidate], float]:
    """Candidates re-scored as lexical score / best lexical score + weight x similarity, best first.

    Also returns the highest similarity of any candidate: when no sentence is close to the question,
    the sources do not answer it.
    """
    closeness = similarity(question, [c.sentence.text for c in scored])
    top = scored[0].score
    rescored = [
        Candidate(c.score / top + _SIMILARITY_WEIGHT * float(sim), c.coverage, c.sentence)
        for c, sim in zip(scored, closeness, strict=True)
    ]
    return sorted(rescored, key=lambda c: -c.score), float(max(closeness))


def _neighbour_terms(sentences: Sequence[_Sentence], i: int) -> set[str]:
    """Terms of the sentences just before and after sentence `i` in the same source."""
    near = (sentences[j] for j in (i - 1, i + 1) if 0 <= j < len(sentences))
    return set().union(*(s.terms for s in near if s.source == sentences[i].source))


_WHAT_IS = re.compile(r"^\s*what\s+(?:is|are)\s+(?:an?\s+|the\s+)?(.+?)\s*\??\s*$", re.IGNORECASE)


def _definition_subject(question: str) -> str | None:
    """The X of a "what is X?" question, lower-cased."""
    match = _WHAT_IS.match(question)
    return match.group(1).lower() if match else None


def _defines(sentence: str, subject: str) -> bool:
    """True for a sentence of the form "X is ..." or "An X is ...", which answers "what is X?"."""
    text = re.sub(r"^(?:an?|the)\s+", "", sentence.lower())
    return text.startswith(subject) and re.match(r"\s+(?:is|are)\b", text[len(subject) :]) is not None


def _dedupe(sentences: list[_Sentence]) -> list[_Sentence]:
    seen: set[str] = set()
    return [s for s in sentences if not (s.text in seen or seen.add(s.text))]  # type: ignore[func-returns-value]


def _cite(sentence: _Sentence) -> str:
    text = sentence.text
    end = text[-1] if text[-1] in ".!?" else "."
    body = text[:-1] if text[-1] in ".!?" else text
    return f"{body} [{sentence.source}]{end}"


class ReplyStreamingChatModel(BaseChatModel):
    """A chat model that builds a whole reply, then streams it word by word like a real model."""

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        """The complete reply to `messages`."""
        raise NotImplementedError

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from stream_message(self._reply(messages), run_manager)


class OfflineChatModel(ReplyStreamingChatModel):
    """A chat model that answers extractively from the sources in its prompt, with no network."""

    max_sentences: int = 3
    """How many source sentences an answer quotes at most."""
    max_tokens: int | None = None
    """Truncate answers to this many words."""
    tool_names: list[str] = Field(default_factory=list)
    """Names of the tools bound with `bind_tools`."""
    similarity: SimilarityName = "auto"
    """How sentences are matched to the question: `lexical`, `minilm`, or `auto` (MiniLM when installed)."""

    @property
    def _llm_type(self) -> str:
        return "ragworks-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "offline", "max_sentences": self.max_sentences, "similarity": self.similarity}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Return a copy that knows the tools' names, so it can call the retriever tool."""
        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        return self.model_copy(update={"tool_names": names})

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        call = self._retriever_call(messages)
        metadata = {"model_name": "offline"}
        if call is not None:
            usage = word_usage(messages, json.dumps(call["args"]))
            return AIMessage(content="", tool_calls=[call], usage_metadata=usage, response_metadata=metadata)
        text = self._answer(messages)
        if self.max_tokens is not None:
            text = " ".join(text.split()[: self.max_tokens])
        return AIMessage(content=text, usage_metadata=word_usage(messages, text), response_metadata=metadata)

    def _retriever_call(self, messages: list[BaseMessage]) -> dict[str, Any] | None:
        if RETRIEVER_TOOL_NAME not in self.tool_names or not messages:
            return None
        last = messages[-1]
        if not isinstance(last, HumanMessage) or parse_sources(str(last.content)):
            return None
        query = condense_keywords(str(last.content), _earlier_questions(messages))
        return {"name": RETRIEVER_TOOL_NAME, "args": {"query": query}, "id": f"call_{uuid.uuid4().hex[:12]}"}

    def _answer(self, messages: list[BaseMessage]) -> str:
        turn = _last_human_index(messages)
        if turn is None:
            return NOT_FOUND
        human = str(messages[turn].content)
        sources = parse_sources(human)
        for msg in messages[turn + 1 :]:
            if isinstance(msg, ToolMessage):
                sources.extend(parse_sources(str(msg.content)))
        question = question_of(messages[turn])
        expanded = condense_keywords(question, _earlier_questions(messages[: turn + 1]))
        context = expanded[len(question) :]
        return extractive_answer(
            question,
            sources,
            context=context,
            max_sentences=self.max_sentences,
            similarity=sentence_similarity(self.similarity),
        )


def word_usage(prompt: Sequence[BaseMessage], reply: str) -> UsageMetadata:
    """Token usage counted in words (whitespace-separated), for models without a tokenizer."""
    n_in = sum(len(str(m.content).split()) for m in prompt)
    n_out = len(reply.split())
    return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}


def stream_message(
    message: AIMessage, run_manager: CallbackManagerForLLMRun | None
) -> Iterator[ChatGenerationChunk]:
    """Stream a finished message word by word; tool calls and usage ride on the last chunk."""
    text = str(message.content)
    words = _TOKEN.findall(text)
    for word in words:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=word))
        if run_manager:
            run_manager.on_llm_new_token(word, chunk=chunk)
        yield chunk
    tail = AIMessageChunk(
        content="" if words else text,
        tool_call_chunks=[
            {"name": c["name"], "args": _json(c["args"]), "id": c["id"], "index": i}
            for i, c in enumerate(message.tool_calls)
        ],
        usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata,
        chunk_position="last",
    )
    yield ChatGenerationChunk(message=tail)


def _json(args: dict[str, Any]) -> str:
    return json.dumps(args)


def _last_human_index(messages: Sequence[BaseMessage]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return i
    return None


def _earlier_questions(messages: Sequence[BaseMessage]) -> list[str]:
    humans = [question_of(m) for m in messages if isinstance(m, HumanMessage)]
    return humans[:-1]
