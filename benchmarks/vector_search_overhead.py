"""What the databricks-vector-search retriever adds over the official client's own query.

    python benchmarks/vector_search_overhead.py [--queries 300] [--k 5]

Both sides query the same index on the local REST emulator (`ragworks.testing.emulators.vector_search`,
a LocalIndex over the docs ragworks ships, hashing embeddings), on 127.0.0.1:

    bare client     AISearchClient(...).get_index(...).similarity_search(query_text=..., columns=...)
    ragworks        get_retriever({"type": "databricks-vector-search", ...}).invoke(query)

The two take turns query by query, so the emulator's cost and machine noise fall on both alike.
Prints the median and p90 ms per query, the ratio of the medians and the ms ragworks adds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from agent_overhead import timed  # the same turn-taking timer (this folder is on sys.path)

INDEX = "main.ragworks.docs"
TOKEN = "dapi-benchmark"


def main() -> None:
    """Run both variants and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()

    from databricks.ai_search.client import AISearchClient

    from ragworks.quickstart import prepare
    from ragworks.retrieval import LocalIndex, get_retriever
    from ragworks.testing.emulators.vector_search import VectorSearchEmulator

    with tempfile.TemporaryDirectory(prefix="ragworks-vs-") as tmp:
        index_dir, _ = prepare(Path(tmp), embeddings="hashing")
        with VectorSearchEmulator({INDEX: LocalIndex.load(index_dir)}, token=TOKEN) as vs:
            os.environ.update(DATABRICKS_HOST=vs.host, DATABRICKS_TOKEN=TOKEN)
            os.environ["DATABRICKS_CONFIG_FILE"] = str(Path(tmp) / "none.cfg")
            client = AISearchClient(workspace_url=vs.host, personal_access_token=TOKEN, disable_notice=True)
            index = client.get_index(index_name=INDEX)
            ours = get_retriever({"type": "databricks-vector-search", "index": INDEX, "k": args.k})
            columns = ["id", "text", "source"]

            def bare(query: str) -> object:
                return index.similarity_search(
                    query_text=query,
                    columns=columns,
                    num_results=args.k,
                    query_type="HYBRID",
                    disable_notice=True,
                )

            variants: dict[str, Callable[[str], object]] = {"bare client": bare, "ragworks": ours.invoke}
            times = timed(variants, args.queries)
    base = statistics.median(times["bare client"])
    print(f"{args.queries} queries, k={args.k}, emulator on 127.0.0.1, {os.cpu_count()} CPUs")
    print(f"{'variant':<14} {'median ms':>10} {'p90 ms':>8} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<14} {median:>10.2f} {p90:>8.2f} {median / base:>6.2f}x")
    added = statistics.median(times["ragworks"]) - base
    print(
        f"ragworks retriever / bare client: {(base + added) / base:.2f}x; it adds {added:.2f} ms a query "
        "(LangChain's retriever callbacks, the Documents, the merged filters)"
    )


if __name__ == "__main__":
    main()
