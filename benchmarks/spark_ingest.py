"""Spark ingest (`local[2]`) against the plain single-process ingest, on SciFact's corpus, in one run.

    python benchmarks/spark_ingest.py                       # ../shared/data/scifact, MiniLM, local[2]
    python benchmarks/spark_ingest.py DATA --limit 500 --embeddings hashing

Each corpus document is written as one .txt file (title, blank line, abstract). Both sides ingest
the same folder with the same embedder: `ragworks ingest` (a LocalIndex saved to a folder) and
`ragworks ingest --spark` (a Delta table through delta-rs). Prints documents/s of each, the ratio of
their times, how many embeddings each computed against its chunk count (each chunk must be embedded
once), whether the chunk ids agree, the Spark session's start-up apart from the ingest, and the
machine's load average before and after (a shared machine slows both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ragworks.embeddings import Embedder, get_embedder
from ragworks.retrieval import ingest
from ragworks.retrieval.local import LocalIndex
from ragworks.scale.spark_ingest import spark_ingest
from ragworks.scale.spark_session import spark_session

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


class CountingEmbedder(Embedder):
    """The named embedder, counting the texts it embeds."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.count = 0

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed with the inner embedder and count."""
        self.count += len(texts)
        return self.inner.encode(texts)

    def spec(self) -> dict[str, object]:
        """The inner embedder's record."""
        return self.inner.spec()


def write_corpus(data: Path, folder: Path, limit: int | None) -> int:
    """One .txt file per corpus document; returns how many."""
    count = 0
    with (data / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and count >= limit:
                break
            doc = json.loads(line)
            (folder / f"{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}", encoding="utf-8")
            count += 1
    return count


def run_local(docs: Path, out: Path, embeddings: str) -> tuple[float, int, list[str]]:
    """(seconds, embeddings computed, chunk ids) of a plain ingest saved to a folder.

    The model loads inside the timing, as it does in each Spark worker.
    """
    inner = get_embedder(embeddings)
    assert inner is not None, "the benchmark needs an embedder (minilm or hashing)"
    counting = CountingEmbedder(inner)
    index = LocalIndex(embeddings=counting)
    started = time.perf_counter()
    ingest([str(docs)], index)
    index.save(out)
    return time.perf_counter() - started, counting.count, index.ids()


def main() -> None:
    """Run both ingests and print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "data", nargs="?", type=Path, default=DEFAULT_DATA, help="BEIR folder with corpus.jsonl"
    )
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--embeddings", default="minilm", choices=["minilm", "hashing"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="ragworks-spark-bench-"))
    docs = work / "docs"
    docs.mkdir()
    n_docs = write_corpus(args.data, docs, args.limit)
    print(
        f"{n_docs} documents, embeddings {args.embeddings}, Spark {args.master}; load {load_before}",
        flush=True,
    )

    started = time.perf_counter()
    spark = spark_session(args.master, app_name="ragworks-bench")
    startup = time.perf_counter() - started
    started = time.perf_counter()
    report = spark_ingest([str(docs)], str(work / "chunks"), embeddings=args.embeddings)
    spark_s = time.perf_counter() - started
    from deltalake import DeltaTable

    spark_ids = DeltaTable(str(work / "chunks")).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    spark.stop()
    print(
        f"spark ingest   {spark_s:8.1f}s  {n_docs / spark_s:7.1f} docs/s  {report.chunks_written} chunks, "
        f"{report.embeddings_computed} embeddings computed (session start-up {startup:.1f}s, not counted)",
        flush=True,
    )
    phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.phases.items())
    print(f"  spark phases: {phases}", flush=True)
    local_s, local_embedded, local_ids = run_local(docs, work / "index", args.embeddings)
    print(
        f"local ingest   {local_s:8.1f}s  {n_docs / local_s:7.1f} docs/s  {len(local_ids)} chunks, "
        f"{local_embedded} embeddings computed",
        flush=True,
    )
    same = sorted(spark_ids) == sorted(local_ids)
    print(f"spark/local time ratio {spark_s / local_s:.2f} (goal <= 1.5); chunk ids identical: {same}")
    print(f"load average after: {os.getloadavg()}; work folder {work}")


if __name__ == "__main__":
    main()
