"""Query rewriting as a retriever option: `retriever.query: plain | multi-query | hyde`.

- `multi-query`: the retriever runs the question and rewritten variants of it and fuses the rankings
  with reciprocal-rank fusion (`fusion.reciprocal_rank_fusion`).
- `hyde`: the retriever searches with the question plus a hypothetical answer passage.

With a chat model (`RewritingRetriever(model=...)`) the variants and the hypothetical answer are
written by the model. Without one (the offline default) they are made deterministically from a first
search: pseudo-relevance feedback adds the words that best mark the top results (multi-query), or the
sentences of those results that share the most terms with the question (hyde). The same question
always gives the same variants.

Example:
    >>> from langchain_core.documents import Document
    >>> docs = [Document(page_content="Aspirin lowers fever. Aspirin thins blood.")]
    >>> expansion_terms("does aspirin help", docs, n=2)
    ['blood', 'fever']
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from ragworks.agents.tracing import child_span
from ragworks.errors import ModelError, RagworksError, RetrievalError
from ragworks.retrieval.fusion import reciprocal_rank_fusion
from ragworks.retrieval.rerank import annotate_retriever_span, sentences
from ragworks.retrieval.text import tokenize

logger = logging.getLogger(__name__)

QueryMode = Literal["plain", "multi-query", "hyde"]
FEEDBACK_DOCS = 3
"""Top results of the first search that feed the offline expansion."""
EXPANSION_TERMS = 8
"""Words the offline multi-query variant adds to the question."""
_WORD = re.compile(r"(?u)\b[^\W\d_][\w-]{2,}\b")

MULTI_QUERY_PROMPT = (
    "Write {n} different search queries that would find passages answering the question below. "
    "Use other words than the question. One query per line, no numbering, nothing else.\n\nQuestion: {q}"
)
HYDE_PROMPT = (
    "Write a short passage (3 sentences) that answers the question below as a reference text would. "
    "Write only the passage.\n\nQuestion: {q}"
)


def expansion_terms(query: str, docs: Sequence[Document], *, n: int = EXPANSION_TERMS) -> list[str]:
    """Words that mark the top documents and are not in the question, best first (pseudo-relevance feedback).

    Each stem is weighted by its frequency share in each document, the better-ranked documents
    counting more, and is written as the surface word it appears as most often.
    """
    asked = set(tokenize(query))
    weights: dict[str, float] = {}
    surface: dict[str, Counter[str]] = {}
    for rank, doc in enumerate(docs[:FEEDBACK_DOCS]):
        words = _WORD.findall(doc.page_content.lower())
        stems = [tokenize(w) for w in words]
        pairs = [(s[0], w) for s, w in zip(stems, words, strict=True) if s and s[0] not in asked]
        for stem, word in pairs:
            weights[stem] = weights.get(stem, 0.0) + 1.0 / (len(words) * (rank + 1))
            surface.setdefault(stem, Counter())[word] += 1
    ranked = sorted(weights, key=lambda s: (-weights[s], s))[:n]
    return [surface[s].most_common(1)[0][0] for s in ranked]


def offline_variants(query: str, docs: Sequence[Document]) -> list[str]:
    """The deterministic multi-query variant: the question plus its feedback words."""
    extra = expansion_terms(query, docs)
    return [f"{query} {' '.join(extra)}"] if extra else []


def offline_hypothesis(query: str, docs: Sequence[Document], *, n: int = 2) -> str:
    """A stand-in for a model's answer: the top results' sentences sharing most terms with the question."""
    asked = set(tokenize(query))
    candidates = [s for doc in docs[:FEEDBACK_DOCS] for s in sentences(doc.page_content)]
    overlap = [(len(asked.intersection(tokenize(s))), -i, s) for i, s in enumerate(candidates)]
    best = sorted(overlap, reverse=True)[:n]
    return " ".join(s for hits, _, s in best if hits > 0)


def model_variants(model: BaseChatModel, query: str, *, n: int = 3) -> list[str]:
    """Search queries written by a chat model (at most `n`, blank lines and repeats dropped)."""
    text = _ask(model, MULTI_QUERY_PROMPT.format(n=n, q=query))
    lines = [re.sub(r"^\s*(?:[-*\d.)]+\s+)?", "", line).strip() for line in text.splitlines()]
    return [line for line in dict.fromkeys(lines) if line and line != query][:n]


def _ask(model: BaseChatModel, prompt: str) -> str:
    try:
        reply = model.invoke([HumanMessage(prompt)])
    except RagworksError:
        raise
    except Exception as exc:
        raise ModelError(f"Query rewriting failed: the model raised {type(exc).__name__}: {exc}") from exc
    content = reply.content
    return content if isinstance(content, str) else " ".join(str(c) for c in content)


class RewritingRetriever(BaseRetriever):
    """Wraps a retriever: searches with rewritten queries (`multi-query` or `hyde`), returns `k` documents."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base: BaseRetriever
    mode: QueryMode = "multi-query"
    k: int = 5
    depth: int = 100
    """How many documents each search of `multi-query` returns before fusing."""
    model: BaseChatModel | None = None
    """Writes the variants or the hypothetical answer; None: the deterministic offline rewriting."""
    tags: list[str] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None, **kwargs: Any
    ) -> list[Document]:
        want = k or self.k

        def search(text: str, n: int) -> list[Document]:
            return self.base.invoke(text, config={"callbacks": run_manager.get_child()}, k=n, **kwargs)

        if self.mode == "plain":
            return search(query, want)
        depth = max(self.depth, want)
        first = search(query, depth) if self.model is None or self.mode == "multi-query" else []
        with child_span(f"rewrite {self.mode}", "PARSER", {"query": query}) as span:
            texts = self._rewrite(query, first)
            if span is not None:
                span.set_outputs({"queries": texts})
        annotate_retriever_span({"ragworks.query_rewrite": self.mode, "ragworks.query_variants": len(texts)})
        if self.mode == "hyde":
            return search(texts[0], want) if texts else first[:want]
        rankings = [first, *(search(t, depth) for t in texts)]
        return _fused(rankings, want, self.mode)

    def _rewrite(self, query: str, first: list[Document]) -> list[str]:
        if self.mode == "hyde":
            hypothesis = _ask(self.model, HYDE_PROMPT.format(q=query)) if self.model else None
            hypothesis = hypothesis if hypothesis is not None else offline_hypothesis(query, first)
            return [f"{query}\n{hypothesis}"] if hypothesis.strip() else []
        return model_variants(self.model, query) if self.model else offline_variants(query, first)


def _fused(rankings: Sequence[Sequence[Document]], k: int, mode: str) -> list[Document]:
    by_key: dict[str, Document] = {}
    keyed: list[list[str]] = []
    for docs in rankings:
        keys = [_key(d) for d in docs]
        for key, doc in zip(keys, docs, strict=True):
            by_key.setdefault(key, doc)
        keyed.append(keys)
    out = []
    for key, score in reciprocal_rank_fusion(keyed)[:k]:
        doc = by_key[key]
        meta = {**doc.metadata, "score": score, "query_rewrite": mode}
        if "score" in doc.metadata:
            meta["retrieval_score"] = doc.metadata["score"]
        out.append(Document(id=doc.id, page_content=doc.page_content, metadata=meta))
    return out


def _key(doc: Document) -> str:
    if doc.id:
        return doc.id
    if not doc.page_content:
        raise RetrievalError("multi-query got a document with neither an id nor text; it cannot fuse it.")
    return "text:" + doc.page_content
