"""The offline answer model: extractive, cited, and free of any network call.

It reads the numbered `<source>` elements of its prompt (see `ragworks.agents.prompts`), ranks their
sentences by stemmed word overlap with the question, and answers with the best few, each cited as
`[n]`. With a retriever tool bound and no tool results yet, it first calls that tool, so the
tool-calling graph also runs offline.

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


def _passages(text: str) -> list[str]:
    """Paragraphs and list items with hard-wrapped lines joined; headings are titles, not answers."""
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


def split_sentences(source: int, text: str) -> list[_Sentence]:
    """Split a source into sentences of at least three words, with their stemmed terms."""
    out = []
    raw_sentences = [s for p in _passages(text) for s in _SENTENCE_SPLIT.split(p)]
    for position, raw in enumerate(raw_sentences):
        sentence = raw.strip()
        if len(sentence.split()) >= 3:
            out.append(
                _Sentence(
                    source=source, position=position, text=sentence, terms=frozenset(tokenize(sentence))
                )
            )
    return out


@functools.lru_cache(maxsize=QUOTABLE_CACHE)
def _quotable(text: str) -> tuple[tuple[int, str, frozenset[str]], ...]:
    """The sentences of a source that may be quoted (instructions dropped), by position.

    Cached by text: a server retrieves the same chunks again and again, and splitting, stemming and
    screening them is most of the offline model's work.
    """
    return tuple(
        (s.position, s.text, s.terms) for s in split_sentences(0, text) if not looks_like_instruction(s.text)
    )


def _terms(text: str) -> set[str]:
    return {t for t in tokenize(text) if t not in _QUESTION_WORDS}


def extractive_answer(
    question: str, sources: Sequence[tuple[int, str]], *, context: str = "", max_sentences: int = 3
) -> str:
    """Answer with the source sentences that best match the question, each cited `[n]`.

    Terms of `context` (earlier turns) help rank sentences but weigh less than the question's own;
    the best sentence must share at least a third of the question's terms. Sentences that give
    orders to an assistant are never quoted.
    """
    asked = _terms(question)
    weights = {t: _CONTEXT_WEIGHT for t in _terms(context)} | {t: 1.0 for t in asked}
    sentences = [
        _Sentence(source=n, position=position, text=sentence, terms=terms)
        for n, text in sources
        for position, sentence, terms in _quotable(text)
    ]
    if not asked or not sentences:
        return NOT_FOUND
    df: dict[str, int] = {}
    for s in sentences:
        for term in s.terms & weights.keys():
            df[term] = df.get(term, 0) + 1
    idf = {t: weights[t] * math.log(1 + len(sentences) / c) for t, c in df.items()}
    scored = [
        (sum(idf[t] for t in s.terms & weights.keys()) / max(len(s.terms), 1) ** 0.25, s)
        for s in sentences
        if s.terms & weights.keys()
    ]
    if max((len(s.terms & asked) for s in sentences), default=0) * 3 < len(asked):
        return NOT_FOUND
    subject = _definition_subject(question)
    if subject:
        scored = [(score * (2.0 if _defines(s.text, subject) else 1.0), s) for score, s in scored]
    best = max(score for score, _ in scored)
    kept = sorted((x for x in scored if x[0] >= best / 2), key=lambda x: -x[0])[:max_sentences]
    chosen = _dedupe(sorted((s for _, s in kept), key=lambda s: (s.source, s.position)))
    return " ".join(_cite(s) for s in chosen)


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

    @property
    def _llm_type(self) -> str:
        return "ragworks-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "offline", "max_sentences": self.max_sentences}

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
        return extractive_answer(question, sources, context=context, max_sentences=self.max_sentences)


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
