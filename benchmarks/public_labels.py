"""Write public human-labelled data as `ragworks eval calibrate` labels (JSONL).

    python benchmarks/public_labels.py begin [--data ../shared/data/begin-dev] -o begin_dev.jsonl
    python benchmarks/public_labels.py nonanswers [--data ../shared/data/squad2-dev-5] -o nonanswers.jsonl
    python benchmarks/public_labels.py scifact [--data ../shared/data/scifact] -o scifact.jsonl

`begin`: BEGIN dev (Wizard of Wikipedia): question = the dialogue message, answer = the response,
context = the knowledge snippet, label faithfulness = "Fully attributable" (as in
`benchmarks/offline_judge_begin.py`). `nonanswers`: the labelled non-answer set of
`benchmarks/_nonanswers.py` (label answer_relevance). `scifact`: each SciFact test claim with each
abstract people judged relevant (label context_relevance True) and the top BM25 abstract they did
not judge relevant (False; SciFact's judgments are sparse, so a few of these may be relevant).
Nothing is copied into the project.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nonanswers import build_set
from offline_judge_begin import load_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def begin_labels(data: Path) -> Iterable[dict[str, object]]:
    """BEGIN dev rows as labelled faithfulness rows."""
    for row in load_rows(data):
        yield {
            "question": row["message"],
            "answer": row["response"],
            "context": [row["knowledge"]],
            "labels": {"faithfulness": row["begin_label"] == "Fully attributable"},
        }


def nonanswer_labels(data: Path, split: str) -> Iterable[dict[str, object]]:
    """The non-answer set as labelled answer_relevance rows."""
    for item in build_set(data, split=split):
        yield {
            "question": item.question,
            "answer": item.answer,
            "context": [item.context],
            "labels": {"answer_relevance": item.label},
            "kind": item.kind,
        }


def scifact_labels(data: Path) -> Iterable[dict[str, object]]:
    """SciFact test claims with judged-relevant abstracts and BM25's top unjudged one."""
    import bm25s

    from _beir import load_beir

    beir = load_beir(data, "test")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(beir.doc_texts, stopwords="en", show_progress=False), show_progress=False)
    text_of = dict(zip(beir.doc_ids, beir.doc_texts, strict=True))
    for qid, claim in beir.queries.items():
        judged = {d for d, grade in beir.qrels[qid].items() if grade > 0}
        found, _ = retriever.retrieve(
            bm25s.tokenize([claim], stopwords="en", show_progress=False), k=10, show_progress=False
        )
        negative = next(beir.doc_ids[i] for i in found[0] if beir.doc_ids[i] not in judged)
        for doc, label in [*((d, True) for d in sorted(judged)), (negative, False)]:
            yield {
                "question": claim,
                "answer": "",
                "context": [text_of[doc]],
                "labels": {"context_relevance": label},
            }


def main(argv: list[str] | None = None) -> int:
    """Write the chosen set as JSONL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=["begin", "nonanswers", "scifact"])
    parser.add_argument("--data", type=Path, help="The data folder (default: ../shared/data/<set>).")
    parser.add_argument("--split", choices=["dev", "test", "all"], default="test", help="nonanswers only.")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.set == "begin":
        rows = begin_labels(args.data or DATA / "begin-dev")
    elif args.set == "scifact":
        rows = scifact_labels(args.data or DATA / "scifact")
    else:
        rows = nonanswer_labels(args.data or DATA / "squad2-dev-5", args.split)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} labelled rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
