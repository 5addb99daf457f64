"""Ingestion into a Databricks Vector Search Direct Access index: the same files and chunks as `ingest`.

    ragworks ingest docs/ --vector-search main.docs.chunks_index [--endpoint EP] [--embeddings minilm]

Files are read and chunked exactly as for a local index (content-hash chunk ids), then written with the
official client: `upsert` for new and changed files' chunks, then `delete` for the chunks they
replaced, so a failed run leaves old chunks rather than none. What the index holds is read once
with `scan` (whole rows, a page at a time); when the index has a `file_hash` column, unchanged files
are not even re-read. Each row carries the primary key, the text, `source`, and whichever of
`chunk_index`, `file_hash` and `type` the index's schema has. An index with managed embeddings embeds
the text itself; one of precomputed vectors needs `embeddings` (ragworks' embedder, as the
retriever's `options.embeddings`), and each chunk's vector is computed here.

An upsert is a POST, which the client does not retry: a 429/503/504 is retried here (`RETRIES`, with
backoff); the client retries scans and deletes itself. A reply that reports failed keys is a
`RetrievalError` naming them. Every call goes through `IndexHandle`, so an expiring login is handled
as for queries. A Delta Sync index is filled from its source table, so it cannot be written here:
that is a `ConfigError` saying so.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import methodcaller
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ragworks.embeddings import Embedder, get_embedder
from ragworks.errors import ConfigError, RetrievalError
from ragworks.retrieval.ingest import IngestReport, make_splitter, plan_ingest
from ragworks.retrieval.local import Chunk
from ragworks.retrieval.vector_search import BACKEND, Action, IndexHandle, IndexSpec

logger = logging.getLogger(__name__)

BATCH = 256
"""Rows per upsert, delete or scan request."""
RETRIES = 3
"""Retries of an upsert (a POST, which the client does not retry) on 429/503/504."""
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
    handle = IndexHandle(index_name, endpoint=endpoint, setting="--vector-search")
    layout = _WriteLayout.of(handle.spec(), index_name, embeddings, text_column)
    show = sys.stderr.isatty() if progress is None else progress
    if embeddings and layout.embedder is None:
        logger.warning(
            "Index %s embeds its text itself; --embeddings %s is not used.", index_name, embeddings
        )
    label = embeddings if embeddings and layout.embedder is not None else "managed by the index"
    report = IngestReport(embedder=label, index_path=index_name)
    known = _known_sources(handle, layout.primary_key)
    fresh, stale = plan_ingest(
        paths, known, splitter=splitter, max_file_mb=max_file_mb, show=show, report=report
    )
    kept = {c.id for c in fresh}  # a chunk id that survives the change is not deleted
    removed = set(stale) - kept
    if report.changed:
        rows = layout.rows(fresh)
        with tqdm(total=len(fresh), desc="Upserting", unit="chunk", disable=not show) as bar:
            for batch in _batches(rows):
                _write(handle, "upsert", methodcaller("upsert", batch), retries=RETRIES)
                bar.update(len(batch))
        for batch in _batches(sorted(removed)):  # the client retries a DELETE itself
            _write(handle, "delete", methodcaller("delete", batch), retries=0)
    report.chunks_written = len(fresh)
    report.chunks_total = sum(len(ids) for _, ids in known.values()) - len(removed) + len(kept - set(stale))
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
        embedder: Embedder | None,
    ) -> None:
        self.primary_key, self.text, self.columns = primary_key, text, columns
        self.vector, self.embedder = vector, embedder

    @classmethod
    def of(
        cls, spec: IndexSpec, index_name: str, embeddings: str | None, text_column: str | None
    ) -> _WriteLayout:
        """The layout for a Direct Access index, from its spec."""
        if not spec.direct_access:
            raise ConfigError(
                f"Vector Search index {index_name!r} is not a Direct Access index: a Delta Sync index is "
                "filled from its source table, so write the chunks to that table instead."
            )
        text = text_column or (spec.source_columns[0] if spec.source_columns else "text")
        missing = [c for c in ("source", text) if c not in spec.columns]
        if missing:
            raise ConfigError(
                f"Vector Search index {index_name!r} has no column {', '.join(map(repr, missing))}: ragworks "
                "writes the chunk text and its source file (a string column 'source')."
            )
        embedder = None
        if spec.vector_column:
            if not embeddings:
                raise ConfigError(
                    f"Vector Search index {index_name!r} holds precomputed vectors ({spec.vector_column!r}): "
                    "pass the embedder that makes them (--embeddings minilm or hashing)."
                )
            embedder = get_embedder(embeddings)
            made = len(embedder.encode(["x"])[0]) if embedder is not None else 0
            if spec.vector_dimension and made != spec.vector_dimension:
                raise ConfigError(
                    f"Vector Search index {index_name!r} stores {spec.vector_dimension}-dimensional vectors, "
                    f"but --embeddings {embeddings} makes {made}: use the embedder the index was built for."
                )
        return cls(
            primary_key=spec.primary_key,
            text=text,
            columns=[c for c in OPTIONAL_COLUMNS if c in spec.columns],
            vector=spec.vector_column,
            embedder=embedder,
        )

    def rows(self, chunks: Sequence[Chunk]) -> list[dict[str, Any]]:
        """The rows to upsert for `chunks`, with vectors when the index stores them."""
        vectors = self.embedder.encode([c.text for c in chunks]) if self.embedder and chunks else None
        rows = []
        for n, chunk in enumerate(chunks):
            row: dict[str, Any] = {self.primary_key: chunk.id, self.text: chunk.text}
            row["source"] = chunk.metadata["source"]
            row.update({c: chunk.metadata[c] for c in self.columns if c in chunk.metadata})
            if vectors is not None and self.vector is not None:
                row[self.vector] = [float(x) for x in vectors[n]]
            rows.append(row)
        return rows


def _known_sources(handle: IndexHandle, primary_key: str) -> dict[str, tuple[str, list[str]]]:
    """source -> (its file hash, chunk ids) for every row the index holds, read with `scan`.

    The hash is "" unless every row of the source carries the same one: after a run that failed
    half-way, chunk ids decide what is unchanged, so no old chunk is left behind.
    """
    ids: dict[str, list[str]] = {}
    hashes: dict[str, set[str]] = {}
    last: str | None = None
    while True:
        page = handle.call("scan", methodcaller("scan", num_results=BATCH, last_primary_key=last))
        rows = [_fields(item) for item in page.get("data") or []]
        for row in rows:
            source = str(row.get("source", ""))
            ids.setdefault(source, []).append(str(row[primary_key]))
            hashes.setdefault(source, set()).add(str(row.get("file_hash") or ""))
        last = page.get("last_primary_key")
        if not rows or not last:
            break
    return {
        source: (next(iter(hashes[source])) if len(hashes[source]) == 1 else "", chunk_ids)
        for source, chunk_ids in ids.items()
    }


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


def _write(handle: IndexHandle, action: Action, call: Callable[[Any], Any], *, retries: int) -> None:
    """One upsert or delete; a reply with failed keys is an error."""
    reply = handle.call(action, call, retries=retries)
    result = reply.get("result") if isinstance(reply, dict) else None
    failed = (result or {}).get("failed_primary_keys") or []
    if (isinstance(reply, dict) and reply.get("status") not in (None, "SUCCESS")) or failed:
        shown = ", ".join(map(str, failed[:10])) + (" ..." if len(failed) > 10 else "")
        raise RetrievalError(
            f"Vector Search {action} on {handle.index_name!r} reported {reply.get('status')}; failed keys: "
            f"{shown or 'not given'}. Run the ingest again: what is missing is written again.",
            backend=BACKEND,
        )
