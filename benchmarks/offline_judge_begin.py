"""Offline faithfulness judge vs plain word overlap on BEGIN (dev, Wizard of Wikipedia).

Reports AUROC for "Fully attributable" vs the rest, for the word-overlap baseline and the offline
judge (lexical, and lexical + MiniLM when the dense extra is installed), in the same run.

    python benchmarks/offline_judge_begin.py [--data ../shared/data/begin-dev] [--no-dense]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ragworks.embeddings import dense_available
from ragworks.eval._offline_judge import OfflineJudge

REPO = Path(__file__).resolve().parents[1]
_WORD = re.compile(r"\w+")


def load_rows(data: Path) -> list[dict[str, str]]:
    """Read the BEGIN dev TSV (no copy of the data is kept)."""
    path = data / "begin_dev_wow.tsv" if data.is_dir() else data
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def word_overlap(knowledge: str, response: str) -> float:
    """Share of the response's words that appear in the knowledge (the baseline)."""
    known = set(_WORD.findall(knowledge.lower()))
    said = _WORD.findall(response.lower())
    return sum(w in known for w in said) / len(said) if said else 0.0


def judge_scores(rows: list[dict[str, str]], *, dense: bool) -> np.ndarray:
    """Faithfulness of each response to its knowledge passage by the offline judge."""
    judge = OfflineJudge(dense=dense)
    judge.prefetch([r["response"] for r in rows] + [r["knowledge"] for r in rows])  # one batch
    return np.array([judge.faithfulness(r["message"], r["response"], [r["knowledge"]]).score for r in rows])


def main(argv: list[str] | None = None) -> int:
    """Print AUROC of the baseline and the offline judge."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "begin-dev")
    parser.add_argument("--no-dense", action="store_true", help="Skip the MiniLM variant.")
    args = parser.parse_args(argv)
    rows = load_rows(args.data)
    labels = np.array([r["begin_label"] == "Fully attributable" for r in rows])
    print(f"BEGIN dev (wow): {len(rows)} rows, {labels.sum()} fully attributable, {(~labels).sum()} not")
    baseline = roc_auc_score(labels, [word_overlap(r["knowledge"], r["response"]) for r in rows])
    print(f"AUROC word overlap (baseline)      {baseline:.4f}")
    variants = [("offline judge (lexical)", False)]
    if dense_available() and not args.no_dense:
        variants.append(("offline judge (lexical + MiniLM)", True))
    best = 0.0
    for label, dense in variants:
        start = time.perf_counter()
        auroc = roc_auc_score(labels, judge_scores(rows, dense=dense))
        best = max(best, auroc)
        print(f"AUROC {label:<28} {auroc:.4f}  ({time.perf_counter() - start:.1f}s, {auroc - baseline:+.4f})")
    print("PASS: the offline judge beats word overlap" if best > baseline else "FAIL: below the baseline")
    return 0 if best > baseline else 1


if __name__ == "__main__":
    sys.exit(main())
