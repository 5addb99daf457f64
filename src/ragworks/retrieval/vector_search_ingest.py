"""Ingestion into a Databricks Vector Search Direct Access index: the same files and chunks as `ingest`.

    ragworks ingest docs/ --vector-search main.docs.chunks_index [--endpoint EP] [--embeddings minilm]

Files are read and chunked exactly as for a local index (content-hash chunk ids), then written with the
official client: `upsert` for new and changed files' chunks, `delete` for the chunks they replace. What
the index already holds is read once with `scan` (primary key and `source` only), so re-ingesting an
unchanged folder writes nothing. Each row carries the primary key, the text, `source`, and whichever
of `chunk_index`, `file_hash` and `type` the index's schema has. An index with managed embeddings
embeds the text itself; one of precomputed vectors needs `embeddings` (ragworks' embedder, as the
retriever's `options.embeddings`), and each chunk's vector is computed here.

A Delta Sync index is filled from its source table, so it cannot be written here: that is a
`ConfigError` saying so.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ragworks.embeddings import get_embedder
from ragworks.errors import ConfigError, RetrievalError
from ragworks.retrieval.ingest import IngestReport, make_splitter, plan_ingest
from ragworks.retrieval.local import Chunk
from ragworks.retrieval.vector_search import Action, explain_failure, open_index

BATCH = 256
"""Rows per upsert, delete or scan request."""
OPTIONAL_COLUMNS = ("chunk_index", "file_hash", "type")


def ingest_to_vector_search(
    paths: Iterable[str | Path],
    index_name: str,
    *,
    endpoint: str | None = None,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    embeddings: str | None = None,
    text_column: str | None = None,
    max_file_mb: float = 50.0,
    progress: bool | None = None,
) -> IngestReport:
    """Load, chunk and write files and folders to a Direct Access index; what happened to each file."""
    started = time.perf_counter()
    splitter = make_splitter(chunk_size, chunk_overlap)
    index = open_index(None, endpoint, index_name)
    layout = _WriteLayout.of(_describe(index, index_name), index_name, embeddings, text_column)
    show = sys.stderr.isatty() if progress is None else progress
    report = IngestReport(embedder=embeddings or "managed by the index", index_path=index_name)
    known = _known_sources(index, index_name, layout.primary_key)
    fresh, stale = plan_ingest(
        paths, known, splitter=splitter, max_file_mb=max_file_mb, show=show, report=report
    )
    if report.changed:
        for batch in _batches(stale):
            with _explained(index_name, "delete"):
                index.delete(batch)
        rows = layout.rows(fresh)
        with tqdm(total=len(fresh), desc="Upserting", unit="chunk", disable=not show) as bar:
            for batch in _batches(rows):
                with _explained(index_name, "upsert"):
                    index.upsert(batch)
                bar.update(len(batch))
    report.chunks_written = len(fresh)
    report.chunks_total = sum(len(ids) for _, ids in known.values()) - len(stale) + len(fresh)
    report.seconds = time.perf_counter() - started
    return report


class _WriteLayout:
    """The columns a row gets, and the embedder for an index of precomputed vectors."""

    def __init__(
        self,
        *,
        primary_key: str,
        text: str,
        columns: Sequence[str],
        vector: str | None,
        embeddings: str | None,
    ) -> None:
        self.primary_key, self.text, self.columns, self.vector = primary_key, text, columns, vector
        self.embedder = get_embedder(embeddings) if vector and embeddings else None

    @classmethod
    def of(
        cls, description: dict[str, Any], index_name: str, embeddings: str | None, text_column: str | None
    ) -> _WriteLayout:
        """The layout for a Direct Access index, from its description."""
        if description.get("index_type") != "DIRECT_ACCESS" or "direct_access_index_spec" not in description:
            raise ConfigError(
                f"Vector Search index {index_name!r} is not a Direct Access index: a Delta Sync index is "
                "filled from its source table, so write the chunks to that table instead."
            )
        spec = description["direct_access_index_spec"]
        schema = set(json.loads(spec.get("schema_json") or "{}"))
        sources = [c["name"] for c in spec.get("embedding_source_columns") or [] if c.get("name")]
        vectors = [c["name"] for c in spec.get("embedding_vector_columns") or [] if c.get("name")]
        text = text_column or (sources[0] if sources else "text")
        missing = [c for c in ("source", text) if c not in schema]
        if missing:
            raise ConfigError(
                f"Vector Search index {index_name!r} has no column {', '.join(map(repr, missing))}: ragworks "
                "writes the chunk text and its source file (a string column 'source')."
            )
        vector = vectors[0] if vectors and not sources else None
        if vector and not embeddings:
            raise ConfigError(
                f"Vector Search index {index_name!r} holds precomputed vectors ({vector!r}): pass the "
                "embedder that makes them (--embeddings minilm or hashing)."
            )
        return cls(
            primary_key=description["primary_key"],
            text=text,
            columns=[c for c in OPTIONAL_COLUMNS if c in schema],
            vector=vector,
            embeddings=embeddings,
        )

    def rows(self, chunks: Sequence[Chunk]) -> list[dict[str, Any]]:
        """The rows to upsert for `chunks`, with vectors when the index stores them."""
        vectors = self.embedder.encode([c.text for c in chunks]) if self.embedder and chunks else None
        rows = []
        for n, chunk in enumerate(chunks):
            row: dict[str, Any] = {self.primary_key: chunk.id, self.text: chunk.text}
            row["source"] = chunk.metadata["source"]
            row.update({c: chunk.metadata[c] for c in self.columns if c in chunk.metadata})
            if vectors is not None and self.vector:
                row[self.vector] = [float(x) for x in vectors[n]]
            rows.append(row)
        return rows


def _describe(index: Any, index_name: str) -> dict[str, Any]:
    with _explained(index_name, "describe"):
        description: dict[str, Any] = index.describe()
    return description


def _known_sources(index: Any, index_name: str, primary_key: str) -> dict[str, tuple[str, list[str]]]:
    """source -> ("", chunk ids) for every row the index holds, read with `scan`."""
    known: dict[str, tuple[str, list[str]]] = {}
    last: str | None = None
    while True:
        with _explained(index_name, "scan"):
            page = index.scan(num_results=BATCH, last_primary_key=last)
        rows = [_fields(item) for item in page.get("data") or []]
        for row in rows:
            known.setdefault(str(row.get("source", "")), ("", []))[1].append(str(row[primary_key]))
        last = page.get("last_primary_key")
        if not rows or not last:
            return known


def _fields(item: dict[str, Any]) -> dict[str, Any]:
    """A scanned row (`{"fields": [{"key", "value": {"string_value": ...}}]}`) as a plain dict."""
    row = {}
    for field in item.get("fields") or []:
        value = field.get("value") or {}
        row[field.get("key")] = next(iter(value.values()), None) if value else None
    return row


def _batches(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), BATCH):
        yield list(items[start : start + BATCH])


@contextmanager
def _explained(index_name: str, action: Action) -> Iterator[None]:
    """A client failure inside the block becomes an error that says what to fix, as the retriever's do."""
    try:
        yield
    except (ConfigError, RetrievalError):
        raise
    except Exception as exc:
        raise explain_failure(exc, index_name, action=action) from exc
