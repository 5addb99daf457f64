"""Checks of a generated suite against its index: self-retrieval recall@k, near-duplicates, copies."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from ragworks.config import SearchMode
from ragworks.eval import _sentences as S
from ragworks.eval._extract import RetrievedDoc
from ragworks.eval.generate import MAX_SIMILARITY, VERBATIM_WORDS, question_terms
from ragworks.eval.scorers import retrieval_value
from ragworks.eval.suite import EvalRow, EvalSuite
from ragworks.retrieval.local import LocalIndex


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteCheck:
    """How a generated suite holds up: mean recall@k of its own expected docs, and its faults."""

    n: int
    recall_at_k: float
    k: int
    duplicates: int
    verbatim: int


def check_suite(
    suite: EvalSuite, index: LocalIndex, *, k: int = 5, mode: SearchMode = "hybrid"
) -> SuiteCheck:
    """Retrieve each question (that expects documents) and count near-duplicate pairs and verbatim copies."""
    rows = [r for r in suite.rows if isinstance(r, EvalRow) and "question" in r.inputs]
    questions = [str(r.inputs["question"]) for r in rows]
    recalls = []
    for row, question in zip(rows, questions, strict=True):
        expected = list((row.expectations.expected_doc_ids if row.expectations else None) or [])
        if not expected:
            continue
        docs = [_retrieved(d.id, d.metadata) for d in index.search(question, k=k, mode=mode)]
        recalls.append(retrieval_value("recall_at_k", docs, expected, k))
    term_sets = [question_terms(q) for q in questions]
    duplicates = sum(S.jaccard(a, b) > MAX_SIMILARITY for a, b in combinations(term_sets, 2))
    corpus: set[tuple[str, ...]] = set()
    for chunk in index.chunks():
        corpus |= S.word_ngrams(chunk.text, VERBATIM_WORDS)
    verbatim = sum(bool(S.word_ngrams(q, VERBATIM_WORDS) & corpus) for q in questions)
    return SuiteCheck(
        n=len(questions),
        recall_at_k=sum(recalls) / max(len(recalls), 1),
        k=k,
        duplicates=duplicates,
        verbatim=verbatim,
    )


def _retrieved(doc_id: str | None, meta: dict[str, object]) -> RetrievedDoc:
    source = meta.get("source")
    uri = meta.get("doc_uri")
    return RetrievedDoc(
        text="", id=doc_id, source=str(source) if source else None, doc_uri=str(uri) if uri else None
    )
