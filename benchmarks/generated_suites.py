"""Generated suites: do the questions `eval generate` writes retrieve their own expected documents?

For the shipped docs and a slice of SciFact's corpus: builds an index, generates a suite offline,
and prints recall@5 of each question's expected document, the number of questions, near-duplicate
pairs (token Jaccard over the generator's threshold) and questions that copy 8 words of any chunk.

    python benchmarks/generated_suites.py [--data ../shared/data] [--docs 300] [-n 100]
        [--embeddings hashing|minilm|none] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ragworks.config import SearchMode
from ragworks.eval.generate import generate_suite
from ragworks.eval.generate_checks import check_suite
from ragworks.retrieval.ingest import ingest
from ragworks.retrieval.local import Chunk, LocalIndex

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "src" / "ragworks" / "data" / "docs"


def scifact_index(data: Path, docs: int, embeddings: str) -> LocalIndex:
    """The first `docs` abstracts of SciFact's corpus, one chunk each (title, then text)."""
    chunks = []
    with (data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line, _ in zip(fh, range(docs), strict=False):
            row = json.loads(line)
            text = f"{row.get('title', '')}\n{row.get('text', '')}"
            chunks.append(Chunk(id=str(row["_id"]), text=text, metadata={"source": f"scifact/{row['_id']}"}))
    index = LocalIndex(embeddings=embeddings)
    index.upsert(chunks)
    return index


def shipped_index(embeddings: str, folder: Path) -> LocalIndex:
    """The shipped docs ingested the way `ragworks ingest` does it."""
    ingest([DOCS], folder, embeddings=embeddings, progress=False)
    return LocalIndex.load(folder)


def report(label: str, index: LocalIndex, n: int, seed: int, modes: list[SearchMode]) -> None:
    """Generate a suite over the index, check it in each search mode, and print one line per mode."""
    start = time.perf_counter()
    result = generate_suite(index.chunks(), n, seed=seed, where=label)
    took = time.perf_counter() - start
    for mode in modes:
        check = check_suite(result.suite, index, k=5, mode=mode)
        print(
            f"{label:<22} {mode:<7} n={check.n:<4} recall@5={check.recall_at_k:.3f} "
            f"duplicates={check.duplicates} verbatim={check.verbatim} "
            f"sources={result.sources_covered}/{result.sources_total} generate={took:.2f}s"
        )


def main() -> None:
    """Run both corpora."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--docs", type=int, default=300, help="SciFact abstracts to index.")
    parser.add_argument("-n", type=int, default=100, help="Questions generated over SciFact.")
    parser.add_argument("--embeddings", default="hashing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", action="append", choices=["hybrid", "bm25", "dense"], help="Repeatable.")
    args = parser.parse_args()
    modes = args.mode or (["hybrid", "bm25", "dense"] if args.embeddings != "none" else ["bm25"])
    print(f"embeddings={args.embeddings} seed={args.seed} k=5")
    with tempfile.TemporaryDirectory() as tmp:
        report("shipped docs", shipped_index(args.embeddings, Path(tmp) / "index"), 20, args.seed, modes)
    report(
        f"scifact ({args.docs} docs)",
        scifact_index(args.data, args.docs, args.embeddings),
        args.n,
        args.seed,
        modes,
    )


if __name__ == "__main__":
    main()
