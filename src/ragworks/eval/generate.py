"""Generated eval suites: questions grounded in an index's chunks, with the documents and facts to expect.

The offline generator needs no model and is deterministic for a seed. It takes prose sentences from
chunks spread over the sources (round-robin, one question per source per round), asks about the
sentence's key phrase together with its rarest other terms, and expects the sentence's document
and key terms. A question that repeats a run of VERBATIM_WORDS words of its chunk, or whose terms
overlap an earlier question's by more than `max_similarity` (token Jaccard), is rejected.

Example:
    >>> from ragworks.retrieval.local import Chunk
    >>> chunk = Chunk(id="c1", text="Hybrid search fuses BM25 rankings with dense embedding rankings.",
    ...               metadata={"source": "docs/search.md"})
    >>> result = generate_suite([chunk], 1, seed=0)
    >>> result.suite.rows[0].expectations.expected_doc_ids
    ['search.md']
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from ragworks.errors import ConfigError, EvalError
from ragworks.eval import _sentences as S
from ragworks.eval.suite import EvalSuite
from ragworks.retrieval.local import Chunk

VERBATIM_WORDS = 8
"""A question may not repeat this many consecutive words of its chunk."""
MAX_SIMILARITY = 0.5
"""Token Jaccard above which a question is a near-duplicate of an earlier one."""
_TEMPLATES = (
    "What does the documentation say about {kp} in connection with {terms}?",
    "How is {kp} related to {terms}?",
    "What is explained about {kp}, regarding {terms}?",
    "Which part do {terms} play for {kp}?",
    "Explain {kp} with respect to {terms}.",
)


_TEMPLATE_TERMS = frozenset().union(*(S.stems(t.format(kp="", terms="")) for t in _TEMPLATES))


def question_terms(question: str) -> set[str]:
    """The question's terms less the template's words: what near-duplicate checks compare."""
    return S.stems(question) - _TEMPLATE_TERMS


class QuestionWriter(Protocol):
    """Turns a sentence of a passage into a question and the facts its answer should state (or None)."""

    name: str

    def __call__(
        self, sentence: str, passage: str, weights: Mapping[str, float], rng: random.Random
    ) -> tuple[str, list[str]] | None: ...


class OfflineWriter:
    """The model-free writer: the sentence's key phrase and rarest terms in a question template."""

    name = "offline"
    malformed = 0

    def __call__(
        self, sentence: str, passage: str, weights: Mapping[str, float], rng: random.Random
    ) -> tuple[str, list[str]] | None:
        """A templated question about the sentence (the passage is not needed)."""
        return question_for(sentence, weights, rng)


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneratedSuite:
    """A generated suite and what the generator rejected on the way."""

    suite: EvalSuite
    requested: int
    duplicates_rejected: int = 0
    verbatim_rejected: int = 0
    malformed: int = 0
    """Model replies that were not a question with facts (LLM writer only)."""
    sources_covered: int = 0
    sources_total: int = 0

    def summary(self) -> str:
        """One line: questions written, sources covered, rejections."""
        got = len(self.suite.rows)
        short = "" if got >= self.requested else f" of {self.requested} requested (the corpus has no more)"
        return (
            f"{got} questions{short} over {self.sources_covered}/{self.sources_total} sources; rejected "
            f"{self.duplicates_rejected} near-duplicates and {self.verbatim_rejected} verbatim copies"
            + (f"; {self.malformed} malformed model replies." if self.malformed else ".")
        )


@dataclass(slots=True, kw_only=True)
class _Candidate:
    sentence: str
    chunk: Chunk
    doc_id: str
    score: float


@dataclass(slots=True)
class _Tally:
    rows: list[dict[str, Any]] = field(default_factory=list)
    seen: list[set[str]] = field(default_factory=list)
    duplicates: int = 0
    verbatim: int = 0
    attempts: int = 0


def doc_ids(chunks: Sequence[Chunk]) -> dict[str, str]:
    """The expected doc id of each chunk id: its file name when unique, else its source, else its id."""
    sources = {c.id: str(c.metadata.get("source") or c.metadata.get("doc_uri") or "") for c in chunks}
    names: dict[str, set[str]] = {}
    for source in set(sources.values()) - {""}:
        names.setdefault(_file_name(source), set()).add(source)
    out = {}
    for cid, source in sources.items():
        if not source:
            out[cid] = cid
        else:
            out[cid] = _file_name(source) if len(names[_file_name(source)]) == 1 else source
    return out


def _file_name(source: str) -> str:
    return source.replace("\\", "/").rsplit("/", 1)[-1]


def generate_suite(
    chunks: Sequence[Chunk],
    n: int,
    *,
    seed: int = 0,
    name: str = "generated",
    max_similarity: float = MAX_SIMILARITY,
    where: str = "the index",
    writer: QuestionWriter | None = None,
    max_attempts: int | None = None,
) -> GeneratedSuite:
    """Up to n questions over the chunks, spread over their sources; EvalError when none can be made.

    `writer` turns sentences into questions (default: the offline one); `max_attempts` bounds how
    many sentences it is given (each is a model call for an LLM writer).
    """
    writer = writer or OfflineWriter()
    if not chunks:
        raise EvalError(
            f"{where} holds no chunks: ingest documents first (ragworks ingest DOCS --index DIR)."
        )
    rng = random.Random(seed)
    by_source, weights = _candidates(chunks, rng)
    limit = max_attempts if max_attempts is not None else sum(len(q) for q in by_source.values())
    tally = _round_robin(by_source, n, writer, _Context(weights, rng, max_similarity, limit))
    if not tally.rows:
        raise EvalError(_nothing_made(tally, writer, len(chunks), where))
    description = f"Generated by the {writer.name} writer from {where} (seed {seed})."
    suite = EvalSuite.model_validate({"name": name, "description": description, "rows": tally.rows})
    covered = {r["expectations"]["expected_doc_ids"][0] for r in tally.rows}
    return GeneratedSuite(
        suite=suite,
        requested=n,
        duplicates_rejected=tally.duplicates,
        verbatim_rejected=tally.verbatim,
        malformed=int(getattr(writer, "malformed", 0)),
        sources_covered=len(covered),
        sources_total=len(by_source),
    )


def _round_robin(
    by_source: dict[str, list[_Candidate]], n: int, writer: QuestionWriter, ctx: _Context
) -> _Tally:
    """Take one question per source per round, in a seeded order of sources, until n or none left."""
    tally = _Tally()
    order = sorted(by_source)
    ctx.rng.shuffle(order)
    queues = {d: list(by_source[d]) for d in order}
    while len(tally.rows) < n and any(queues.values()) and tally.attempts < ctx.limit:
        for doc in order:
            if len(tally.rows) < n and tally.attempts < ctx.limit:
                _take_one(queues[doc], writer, ctx, tally)
    return tally


def _nothing_made(tally: _Tally, writer: QuestionWriter, chunks: int, where: str) -> str:
    """Why no question came out: no usable sentence at all, or every attempt rejected."""
    if not tally.attempts:
        return (
            f"No question could be generated from the {chunks} chunks of {where}: they hold no prose "
            f"sentences of {S.MIN_WORDS}-{S.MAX_WORDS} words."
        )
    malformed = int(getattr(writer, "malformed", 0))
    return (
        f"No question could be generated from the {chunks} chunks of {where}: all {tally.attempts} "
        f"sentences tried were rejected ({tally.verbatim} verbatim copies, {tally.duplicates} "
        f"near-duplicates, {malformed} malformed model replies, the rest without enough distinct terms)."
    )


def _candidates(
    chunks: Sequence[Chunk], rng: random.Random
) -> tuple[dict[str, list[_Candidate]], dict[str, float]]:
    """Each source's sentences, best first: more rare terms ranks higher, the seed breaks near-ties."""
    ids = doc_ids(chunks)
    by_source: dict[str, list[_Candidate]] = {}
    for chunk in chunks:
        for sentence in S.sentences(chunk.text):
            by_source.setdefault(ids[chunk.id], []).append(
                _Candidate(sentence=sentence, chunk=chunk, doc_id=ids[chunk.id], score=0.0)
            )
    weights = S.source_weights({d: [c.sentence for c in cs] for d, cs in by_source.items()})
    for cands in by_source.values():
        for cand in cands:
            top = sorted((t.weight for t in S.terms(cand.sentence, weights)), reverse=True)[:6]
            cand.score = sum(top) * (0.8 + 0.4 * rng.random())
        cands.sort(key=lambda c: -c.score)
    return by_source, weights


@dataclass(frozen=True, slots=True)
class _Context:
    weights: dict[str, float]
    rng: random.Random
    max_similarity: float
    limit: int


def _take_one(queue: list[_Candidate], writer: QuestionWriter, ctx: _Context, tally: _Tally) -> None:
    """Accept the first candidate of this source's queue that makes a new, non-verbatim question."""
    while queue and tally.attempts < ctx.limit:
        cand = queue.pop(0)
        tally.attempts += 1
        made = writer(cand.sentence, cand.chunk.text, ctx.weights, ctx.rng)
        if made is None:
            continue
        question, facts = made
        if S.word_ngrams(question, VERBATIM_WORDS) & S.word_ngrams(cand.chunk.text, VERBATIM_WORDS):
            tally.verbatim += 1
            continue
        terms = question_terms(question)
        if any(S.jaccard(terms, other) > ctx.max_similarity for other in tally.seen):
            tally.duplicates += 1
            continue
        tally.seen.append(terms)
        tally.rows.append(_row(question, facts, cand, writer.name))
        return


def question_for(
    sentence: str, weights: Mapping[str, float], rng: random.Random
) -> tuple[str, list[str]] | None:
    """A question about the sentence's key phrase and its rarest other terms, and the facts to expect."""
    phrase = S.key_phrase(sentence, weights)
    taken = {t.stem for t in phrase}
    others = sorted((t for t in S.terms(sentence, weights) if t.stem not in taken), key=lambda t: -t.weight)
    if not phrase or len(others) < 2:
        return None
    asked = [t.word for t in others[:3]]
    listing = ", ".join(asked[:-1]) + " and " + asked[-1]
    kp = " ".join(t.word for t in phrase)
    question = rng.choice(_TEMPLATES).format(kp=kp, terms=listing)
    facts = [kp, *(t.word for t in others[3:6])]
    return question[0].upper() + question[1:], facts


def _row(question: str, facts: list[str], cand: _Candidate, generator: str) -> dict[str, Any]:
    return {
        "inputs": {"question": question},
        "expectations": {
            "expected_doc_ids": [cand.doc_id],
            "expected_facts": facts,
            "expected_response": cand.sentence,
        },
        "tags": {"generator": generator, "chunk_id": cand.chunk.id},
    }


def load_chunks(index: Path | None = None, config: Path | None = None) -> tuple[list[Chunk], str]:
    """The chunks of a local index folder, or of the local index an agent config names; and its name."""
    from ragworks.retrieval.local import LocalIndex

    if (index is None) == (config is None):
        raise ConfigError(
            "Say which index to generate from: --index DIR or --config agent.yaml (one of them)."
        )
    if config is not None:
        from ragworks.config import AgentConfig

        retriever = AgentConfig.from_yaml(config).retriever
        if retriever.type != "local":
            raise ConfigError(
                f"eval generate reads a local index; {config} names a {retriever.type!r} retriever: "
                "pass --index DIR."
            )
        index = Path(retriever.index)
    folder = Path(index) if index is not None else Path(".")
    return LocalIndex.load(folder).chunks(), f"index {folder}"


def write_suite(suite: EvalSuite, path: Path) -> None:
    """Write a suite as YAML that `EvalSuite.load` reads back."""
    raw = {"name": suite.name, "description": suite.description, "rows": suite.to_records()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")
