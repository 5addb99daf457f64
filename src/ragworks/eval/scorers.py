"""MLflow scorers: judge-based quality scores and retrieval metrics, each returning a `Feedback`.

Every scorer has MLflow's shape `(inputs, outputs, expectations, trace) -> Feedback`, so ours and
MLflow's built-ins (`RelevanceToQuery`, `RetrievalGroundedness`, ...) mix in one
`mlflow.genai.evaluate` call. The question comes from `inputs`, the answer from `outputs`, and the
retrieved context from the trace's RETRIEVER spans (else `custom_outputs["sources"]`).

Example:
    >>> scorers = make_scorers(["faithfulness", "recall_at_k"], judge="offline:lexical", k=3)
    >>> [s.name for s in scorers]
    ['faithfulness', 'recall_at_k']
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mlflow.entities import AssessmentError, AssessmentSource, AssessmentSourceType, Feedback
from mlflow.genai.scorers import Scorer, scorer

from ragworks.errors import ConfigError
from ragworks.eval._extract import RetrievedDoc, answer_of, matches, question_of, retrieved_of
from ragworks.eval.citations import CitationCheck, check_citations
from ragworks.eval.judges import Judge, Judgement, get_judge

JUDGE_SCORERS = ("answer_relevance", "faithfulness", "context_relevance", "correctness")
RETRIEVAL_SCORERS = ("precision_at_k", "recall_at_k", "mrr", "ndcg_at_k")
CITATION_SCORERS = ("citation_precision", "citation_recall")
SCORER_NAMES = JUDGE_SCORERS + RETRIEVAL_SCORERS + CITATION_SCORERS
"""Each name is one scorer giving one metric of that name."""
SCORER_GROUPS = {"citations": CITATION_SCORERS}
"""Names of one scorer that gives several metrics from one check (gate on the metrics' own names)."""
DEFAULT_SCORERS = (
    "answer_relevance",
    "faithfulness",
    "context_relevance",
    "correctness",
    "recall_at_k",
    "mrr",
)
_METADATA_CHARS = 4000
_T = TypeVar("_T")


class _JudgeRef:
    """Resolves a judge name on first use, once, from any scorer thread."""

    def __init__(self, judge: str | Judge) -> None:
        self._spec = judge
        self._judge: Judge | None = None if isinstance(judge, str) else judge
        self._lock = threading.Lock()

    def get(self) -> Judge:
        with self._lock:
            if self._judge is None:
                self._judge = get_judge(self._spec)
            return self._judge


def _source(judge: Judge) -> AssessmentSource:
    kind = AssessmentSourceType.CODE if judge.name.startswith("offline") else AssessmentSourceType.LLM_JUDGE
    return AssessmentSource(source_type=kind, source_id=judge.name)


def _feedback(name: str, judge: Judge, judgement: Judgement, **extra: Any) -> Feedback:
    details = json.dumps({**judgement.details, **extra}, default=str, ensure_ascii=False)
    return Feedback(
        name=name,
        value=float(judgement.score),
        rationale=judgement.rationale,
        source=_source(judge),
        metadata={"judge": judge.name, "details": details[:_METADATA_CHARS]},
    )


def _error(name: str, source: AssessmentSource, exc: Exception) -> Feedback:
    # No stack trace: it could carry request headers; the message says what failed.
    message = f"{type(exc).__name__}: {exc}"
    return Feedback(
        name=name, source=source, error=AssessmentError(error_code="JUDGE_ERROR", error_message=message)
    )


def _judged(name: str, ref: _JudgeRef, grade: Callable[[Judge], _T]) -> _T | Feedback:
    judge = ref.get()
    try:
        return grade(judge)
    except Exception as exc:  # a failed judgement is an error on this row, never the end of the suite
        return _error(name, _source(judge), exc)


def _faithfulness(ref: _JudgeRef, name: str) -> Scorer:
    @scorer(name=name, description="Share of the answer supported by the retrieved context.")
    def faithfulness(inputs: Any, outputs: Any, trace: Any = None) -> Feedback | None:
        def grade(judge: Judge) -> Feedback:
            docs = retrieved_of(trace, outputs)
            return _feedback(
                name,
                judge,
                judge.faithfulness(question_of(inputs), answer_of(outputs), [d.text for d in docs]),
            )

        return _judged(name, ref, grade)

    return faithfulness


def _answer_relevance(ref: _JudgeRef, name: str) -> Scorer:
    @scorer(name=name, description="Whether the answer addresses the question.")
    def answer_relevance(inputs: Any, outputs: Any) -> Feedback | None:
        return _judged(
            name,
            ref,
            lambda j: _feedback(name, j, j.answer_relevance(question_of(inputs), answer_of(outputs))),
        )

    return answer_relevance


def _context_relevance(ref: _JudgeRef, name: str) -> Scorer:
    @scorer(name=name, description="Share of the retrieved passages relevant to the question.")
    def context_relevance(inputs: Any, outputs: Any, trace: Any = None) -> Feedback | None:
        def grade(judge: Judge) -> Feedback:
            docs = retrieved_of(trace, outputs)
            if not docs:
                return _feedback(name, judge, Judgement(score=0.0, rationale="No passages were retrieved."))
            question = question_of(inputs)
            with ThreadPoolExecutor(max_workers=min(8, len(docs))) as pool:
                verdicts = list(pool.map(lambda d: judge.context_relevance(question, d.text), docs))
            return _feedback(name, judge, _passages_judgement(docs, verdicts))

        return _judged(name, ref, grade)

    return context_relevance


def _passages_judgement(docs: Sequence[RetrievedDoc], verdicts: Sequence[Judgement]) -> Judgement:
    score = sum(v.score for v in verdicts) / len(verdicts)
    weak = [
        f"[{i}] {d.label}" for i, (d, v) in enumerate(zip(docs, verdicts, strict=True), 1) if v.score < 0.5
    ]
    rationale = f"{len(docs) - len(weak)} of {len(docs)} retrieved passages are relevant"
    rationale += f"; not relevant: {', '.join(weak)}." if weak else "."
    passages = [
        {"doc": d.label, "score": v.score, "rationale": v.rationale}
        for d, v in zip(docs, verdicts, strict=True)
    ]
    return Judgement(score=score, rationale=rationale, details={"passages": passages})


def _correctness(ref: _JudgeRef, name: str) -> Scorer:
    @scorer(name=name, description="Share of the expected facts (or expected response) the answer states.")
    def correctness(inputs: Any, outputs: Any, expectations: Any = None) -> Feedback | None:
        exp = expectations or {}
        if not exp.get("expected_facts") and not exp.get("expected_response"):
            return None  # nothing to compare with: no assessment for this row

        def grade(judge: Judge) -> Feedback:
            judgement = judge.correctness(
                question_of(inputs),
                answer_of(outputs),
                expected_response=exp.get("expected_response"),
                expected_facts=exp.get("expected_facts"),
            )
            return _feedback(name, judge, judgement)

        return _judged(name, ref, grade)

    return correctness


def _relevance_flags(docs: Sequence[RetrievedDoc], expected: Sequence[str]) -> tuple[list[bool], list[bool]]:
    """Per rank: does the chunk match an expected id, and is it the first chunk of its expected doc."""
    relevant: list[bool] = []
    first: list[bool] = []
    seen: set[str] = set()
    for doc in docs:
        hits = {e for e in expected if matches(doc, e)}
        relevant.append(bool(hits))
        first.append(bool(hits - seen))
        seen |= hits
    return relevant, first


def retrieval_value(metric: str, docs: Sequence[RetrievedDoc], expected: Sequence[str], k: int) -> float:
    """precision_at_k, recall_at_k, mrr or ndcg_at_k of ranked docs against expected ids."""
    relevant, first = _relevance_flags(docs, expected)
    if metric == "precision_at_k":
        return sum(relevant[:k]) / k
    if metric == "recall_at_k":
        found = {e for d in docs[:k] for e in expected if matches(d, e)}
        return len(found) / len(set(expected))
    if metric == "mrr":
        return next((1 / rank for rank, hit in enumerate(relevant, 1) if hit), 0.0)
    # nDCG: binary gains, each expected doc counted once (at its best rank), so the value stays <= 1
    dcg = sum(1 / math.log2(rank + 1) for rank, hit in enumerate(first[:k], 1) if hit)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(set(expected)), k) + 1))
    return dcg / ideal if ideal else 0.0


def _retrieval(metric: str, k: int, name: str) -> Scorer:
    source = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=f"ragworks.{metric}")

    @scorer(name=name, description=f"{metric} of the retrieved chunks against expected_doc_ids (k={k}).")
    def retrieval_metric(outputs: Any, expectations: Any = None, trace: Any = None) -> Feedback | None:
        expected = list((expectations or {}).get("expected_doc_ids") or [])
        if not expected:
            return None
        docs = retrieved_of(trace, outputs)
        value = retrieval_value(metric, docs, expected, k)
        ranks = [rank for rank, d in enumerate(docs, 1) if any(matches(d, e) for e in expected)]
        rationale = f"{metric} = {value:.3f} (k={k}); expected {', '.join(expected)}; "
        rationale += f"matching ranks {ranks}" if ranks else f"none of {len(docs)} retrieved chunks match"
        retrieved = json.dumps([d.label for d in docs])[:_METADATA_CHARS]
        return Feedback(
            name=name,
            value=value,
            rationale=rationale + ".",
            source=source,
            metadata={"k": str(k), "retrieved": retrieved},
        )

    return retrieval_metric


def _citation_feedback(metric: str, judge: Judge, check: CitationCheck) -> Feedback | None:
    value = check.precision if metric == "precision" else check.recall
    if value is None:
        return None  # no sentence cites (precision) or none is supported (recall): nothing to score
    details = {"sources": check.sources, "sentences": [s.as_dict() for s in check.sentences]}
    judgement = Judgement(score=value, rationale=check.rationale(metric), details=details)
    return _feedback(f"citation_{metric}", judge, judgement)


def _citations(ref: _JudgeRef, name: str) -> Scorer:
    metrics = ("precision", "recall") if name == "citations" else (name.removeprefix("citation_"),)

    @scorer(name=name, description="Whether each cited [n] supports its sentence: precision and recall.")
    def citations(inputs: Any, outputs: Any, trace: Any = None) -> Feedback | list[Feedback] | None:
        def grade(judge: Judge) -> Feedback | list[Feedback] | None:
            docs = retrieved_of(trace, outputs)
            check = check_citations(question_of(inputs), answer_of(outputs), docs, judge)
            found = [f for f in (_citation_feedback(m, judge, check) for m in metrics) if f is not None]
            return (found or None) if name == "citations" else (found[0] if found else None)

        return _judged(name, ref, grade)

    return citations


_FACTORIES: dict[str, Callable[[_JudgeRef, str], Scorer]] = {
    "faithfulness": _faithfulness,
    "answer_relevance": _answer_relevance,
    "context_relevance": _context_relevance,
    "correctness": _correctness,
    **dict.fromkeys((*CITATION_SCORERS, *SCORER_GROUPS), _citations),
}


def make_scorer(name: str, *, judge: str | Judge = "offline", k: int = 5) -> Scorer:
    """One scorer by name (SCORER_NAMES or SCORER_GROUPS); a judge-based one resolves `judge` on first use."""
    if name in _FACTORIES:
        return _FACTORIES[name](_JudgeRef(judge), name)
    if name in RETRIEVAL_SCORERS:
        return _retrieval(name, k, name)
    available = ", ".join((*SCORER_NAMES, *SCORER_GROUPS))
    raise ConfigError(f"Unknown scorer {name!r}. Available: {available}.")


def make_scorers(
    names: Sequence[str] | None = None, *, judge: str | Judge = "offline", k: int = 5
) -> list[Scorer]:
    """Scorers by name (default: DEFAULT_SCORERS), sharing one judge."""
    ref = _JudgeRef(judge)
    out = []
    for name in names or DEFAULT_SCORERS:
        out.append(_FACTORIES[name](ref, name) if name in _FACTORIES else make_scorer(name, k=k))
    return out


# Module-level scorers with the offline judge, for direct use in mlflow.genai.evaluate.
answer_relevance = make_scorer("answer_relevance")
faithfulness = make_scorer("faithfulness")
context_relevance = make_scorer("context_relevance")
correctness = make_scorer("correctness")
precision_at_k = make_scorer("precision_at_k")
recall_at_k = make_scorer("recall_at_k")
mrr = make_scorer("mrr")
ndcg_at_k = make_scorer("ndcg_at_k")
citation_precision = make_scorer("citation_precision")
citation_recall = make_scorer("citation_recall")
