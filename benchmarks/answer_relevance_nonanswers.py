"""Offline answer relevance on answers vs non-answers (SQuAD 2.0 dev slice): today's judge vs the term count.

The set (see `benchmarks/_nonanswers.py`): for each answerable question, its human answer (as the
paragraph's sentence, and as the bare span) labelled True, and five constructed non-answers of
the same question labelled False (a pointer elsewhere, a bare command or code, metadata, a
refusal although the paragraph holds the answer, a restatement of the question). Reports AUROC
of the answer-relevance score for True vs False, overall and per kind of non-answer, for the
term-count score (`OfflineJudge.term_relevance`, answer relevance before the non-answer checks)
and the current `OfflineJudge.answer_relevance`, lexical and (with the dense extra) with MiniLM.

    python benchmarks/answer_relevance_nonanswers.py [--data ../shared/data/squad2-dev-5]
        [--split test|dev|all] [--no-dense]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nonanswers import TEMPLATES, Item, build_set
from ragworks.embeddings import dense_available
from ragworks.eval._agreement_stats import auroc
from ragworks.eval._offline_judge import OfflineJudge
from ragworks.eval.judges import Judgement

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2-dev-5"
Score = Callable[[str, str], Judgement]


def scores_of(items: list[Item], score: Score) -> np.ndarray:
    """The score of each item's answer to its question."""
    return np.array([score(i.question, i.answer).score for i in items])


def report(items: list[Item], scores: np.ndarray) -> dict[str, float]:
    """AUROC overall, per non-answer kind (vs all real answers), and the mean score of each kind."""
    labels = np.array([i.label for i in items])
    kinds = np.array([i.kind for i in items])
    out = {"all": auroc(labels, scores)}
    for kind in TEMPLATES:
        keep = labels | (kinds == kind)
        out[kind] = auroc(labels[keep], scores[keep])
    for kind in ("sentence", "short", *TEMPLATES):
        out[f"mean {kind}"] = float(scores[kinds == kind].mean())
    return out


def main(argv: list[str] | None = None) -> int:
    """Print AUROC of the term-count score and of the current judge, side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", choices=["dev", "test", "all"], default="test")
    parser.add_argument("--no-dense", action="store_true", help="Skip the MiniLM variant.")
    args = parser.parse_args(argv)
    items = build_set(args.data, split=args.split)
    positives = sum(i.label for i in items)
    print(
        f"SQuAD 2.0 non-answers ({args.split}): {len(items)} rows, {positives} answers, "
        f"{len(items) - positives} non-answers"
    )
    variants = [False] + ([True] if dense_available() and not args.no_dense else [])
    ok = True
    for dense in variants:
        judge = OfflineJudge(dense=dense)
        judge.prefetch([i.answer for i in items] + sorted({i.question for i in items}))
        start = time.perf_counter()
        old = report(items, scores_of(items, judge.term_relevance))
        new = report(items, scores_of(items, judge.answer_relevance))
        print(f"\n{judge.name} ({time.perf_counter() - start:.1f}s)   term count   answer_relevance")
        for key in old:
            label = f"AUROC {key}" if not key.startswith("mean") else key
            print(f"  {label:<22} {old[key]:>10.4f}   {new[key]:>10.4f}")
        ok = ok and new["all"] > old["all"]
    print("\nPASS: answer_relevance beats the term count" if ok else "\nFAIL: not better than the term count")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
