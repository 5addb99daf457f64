"""Offline answer quality on SQuAD 2.0 dev (5 articles): the old extractive model vs today's, same run.

Each paragraph of the slice becomes a file, ingested into a BM25-only LocalIndex; each question
retrieves k=5 chunks and both models answer from them. Reported per model, on a seeded sample of
answerable and unanswerable questions: SQuAD token F1 and exact match (answerable; citations
removed, SQuAD normalisation, best over the human spans), gold recall (share of answerable
answers that contain a human span), median answer length in words, and abstention (the
"I could not find this" answer) on answerable and on unanswerable questions.

The articles are split like `benchmarks/_nonanswers.py`: `dev` (Normans, Computational complexity
theory, Southern California) is for tuning, `test` (Sky (United Kingdom), Victoria (Australia)) is
reported; `all` samples across the five.

    python benchmarks/offline_answers.py [--data ../shared/data/squad2-dev-5] [--split all|dev|test]
        [--n 200] [--k 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import random
import re
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _legacy_offline import legacy_answer
from _nonanswers import DEV_ARTICLES
from ragworks.agents.offline import extractive_answer
from ragworks.agents.prompts import NOT_FOUND
from ragworks.agents.sentence_similarity import sentence_similarity
from ragworks.retrieval import LocalIndex
from ragworks.retrieval.ingest import ingest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2-dev-5"
Model = Callable[[str, Sequence[tuple[int, str]]], str]
MODELS: dict[str, Callable[[], Model]] = {
    "before": lambda: legacy_answer,
    "lexical": lambda: extractive_answer,
    "lexical-1": lambda: functools.partial(extractive_answer, max_sentences=1),  # never a second sentence
    # The default where the dense extra is installed (`llm: offline`, or `offline:minilm`).
    "minilm": lambda: functools.partial(extractive_answer, similarity=sentence_similarity("minilm")),
    "minilm-1": lambda: functools.partial(
        extractive_answer, max_sentences=1, similarity=sentence_similarity("minilm")
    ),
}
_CITATION = re.compile(r"\s*\[\d+\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True, slots=True)
class Question:
    """One SQuAD question: its human spans (empty when unanswerable) and its article."""

    text: str
    answers: tuple[str, ...]
    article: str


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 of one prediction against one human span."""
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def load(data: Path, split: str) -> tuple[list[tuple[str, str]], list[Question]]:
    """The paragraphs (file name, text) of every article, and the questions of `split`."""
    path = data / "squad2_dev_5_articles.json" if data.is_dir() else data
    paragraphs, questions = [], []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        part = "dev" if article["title"] in DEV_ARTICLES else "test"
        for i, paragraph in enumerate(article["paragraphs"]):
            paragraphs.append((f"{article['title']}_{i:03d}.txt", paragraph["context"]))
            if split not in {"all", part}:
                continue
            for qa in paragraph["qas"]:
                spans = () if qa.get("is_impossible") else tuple(a["text"] for a in qa["answers"])
                questions.append(Question(qa["question"].strip(), spans, article["title"]))
    return paragraphs, questions


def sample(questions: list[Question], n: int, seed: int) -> list[Question]:
    """A seeded sample of `n` answerable and `n` unanswerable questions."""
    rng = random.Random(seed)
    answerable = [q for q in questions if q.answers]
    unanswerable = [q for q in questions if not q.answers]
    return rng.sample(answerable, min(n, len(answerable))) + rng.sample(
        unanswerable, min(n, len(unanswerable))
    )


def measure(model: Model, items: list[tuple[Question, list[tuple[int, str]]]]) -> dict[str, float]:
    """F1, EM, gold recall, median words and abstention of `model` on retrieved sources."""
    f1s, ems, recalls, words = [], [], [], []
    abstain = {True: 0, False: 0}
    counts = {True: 0, False: 0}
    for question, sources in items:
        answer = model(question.text, sources)
        answerable = bool(question.answers)
        counts[answerable] += 1
        if answer == NOT_FOUND:
            abstain[answerable] += 1
        if not answerable:
            continue
        text = "" if answer == NOT_FOUND else _CITATION.sub("", answer)
        words.append(len(text.split()))
        f1s.append(max(token_f1(text, g) for g in question.answers))
        ems.append(max(float(normalize(text) == normalize(g)) for g in question.answers))
        flat = f" {normalize(text)} "
        recalls.append(any(f" {normalize(g)} " in flat for g in question.answers if normalize(g)))
    return {
        "token_f1": statistics.fmean(f1s),
        "exact_match": statistics.fmean(ems),
        "gold_recall": statistics.fmean(recalls),
        "median_words": statistics.median(w for w in words if w) if any(words) else 0.0,
        "abstain_answerable": abstain[True] / max(counts[True], 1),
        "abstain_unanswerable": abstain[False] / max(counts[False], 1),
    }


def retrieve(
    paragraphs: list[tuple[str, str]], questions: list[Question], k: int
) -> list[tuple[Question, list[tuple[int, str]]]]:
    """Index the paragraphs as files (BM25 only) and retrieve k numbered sources per question."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        for name, text in paragraphs:
            (folder / name).write_text(text, encoding="utf-8")
        index = LocalIndex(embeddings="none")
        ingest([folder], index, progress=False)
    return [
        (q, [(n, d.page_content) for n, d in enumerate(index.search(q.text, k=k, mode="bm25"), start=1)])
        for q in questions
    ]


def main(argv: list[str] | None = None) -> int:
    """Print the figures of the old and the new offline model (and the new one capped at one sentence)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", choices=["all", "dev", "test"], default="all")
    parser.add_argument("--n", type=int, default=200, help="Answerable and unanswerable questions each.")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    paragraphs, questions = load(args.data, args.split)
    items = retrieve(paragraphs, sample(questions, args.n, args.seed), args.k)
    n_yes = sum(1 for q, _ in items if q.answers)
    print(
        f"squad2-dev-5 split={args.split}: {n_yes} answerable + {len(items) - n_yes} unanswerable, "
        f"BM25 k={args.k}"
    )
    print(f"{'model':8} {'F1':>6} {'EM':>6} {'gold':>6} {'words':>6} {'abst+':>6} {'abst-':>6} {'ms/q':>6}")
    for name, make in MODELS.items():
        model = make()
        model(items[0][0].text, items[0][1])  # loads MiniLM outside the timing
        started = time.perf_counter()
        m = measure(model, items)
        ms = (time.perf_counter() - started) * 1000 / len(items)
        print(
            f"{name:8} {m['token_f1']:6.3f} {m['exact_match']:6.3f} {m['gold_recall']:6.3f} "
            f"{m['median_words']:6.0f} {m['abstain_answerable']:6.0%} "
            f"{m['abstain_unanswerable']:6.0%} {ms:6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
