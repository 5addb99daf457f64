"""What a Spark executor runs for `ingest --spark`: read, chunk and embed one partition of documents.

A partition's rows are documents: a local file to read (`path`), a file Spark has read (`content`),
or a table row (`text`). Each becomes its chunks (the local ingest's own `chunk_document`, so ids
and texts are identical), or one status row: `unchanged` (its hash is the one the table holds, so it
is not read further nor embedded) or `skipped` with the reason. The embedder is built once per
Python worker (MiniLM's model is shared within the process, and Spark reuses its Python workers),
and each batch's chunks are embedded in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragworks.embeddings import Embedder, get_embedder
from ragworks.retrieval.ingest import chunk_document, make_splitter, read_file_bytes
from ragworks.retrieval.loaders import SUPPORTED_SUFFIXES, SkipFile, read_document
from ragworks.retrieval.local import Chunk

if TYPE_CHECKING:
    import pandas as pd
    from pyspark import Accumulator
    from pyspark.broadcast import Broadcast

DOCUMENT_SCHEMA = "source string, path string, content binary, text string, kind string"
"""One row per document; `kind` is the file suffix (`.md`) or `row` for a table row."""
OUTPUT_SCHEMA = (
    "id string, text string, source string, chunk_index int, file_hash string, type string, "
    "embedding array<float>, status string, reason string"
)
"""One row per chunk (status `chunk`), or per unchanged or skipped document."""
ROW_KIND = "row"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerParams:
    """What every partition needs: chunking, the embedder's name and the file size limit."""

    chunk_size: int
    chunk_overlap: int
    embeddings: str
    max_file_mb: float


@lru_cache(maxsize=4)
def _embedder(name: str) -> Embedder | None:
    # One per Python worker process: the worker is reused across tasks, so the model loads once.
    return get_embedder(name)


def chunk_partition(
    frames: Iterator[pd.DataFrame],
    *,
    params: WorkerParams,
    known: Broadcast[dict[str, str]],
    embedded: Accumulator[int],
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: documents in, chunk rows (with embeddings) and status rows out."""
    splitter = make_splitter(params.chunk_size, params.chunk_overlap)
    embedder = _embedder(params.embeddings)
    hashes = known.value
    for frame in frames:
        chunks: list[Chunk] = []
        statuses: list[dict[str, Any]] = []  # Any: one output row's values
        for doc in frame.itertuples(index=False):
            try:
                text, digest = _read(doc, params.max_file_mb, hashes)
            except SkipFile as exc:
                statuses.append(_status(doc.source, "skipped", str(exc)))
                continue
            if text is None:
                statuses.append(_status(doc.source, "unchanged", None))
                continue
            chunks += chunk_document(
                text, source=doc.source, file_hash=digest, kind=doc.kind, splitter=splitter
            )
        vectors = embedder.encode([c.text for c in chunks]) if embedder is not None and chunks else None
        embedded.add(len(chunks) if vectors is not None else 0)
        yield _frame(chunks, vectors, statuses)


def _read(doc: Any, max_file_mb: float, hashes: dict[str, str]) -> tuple[str | None, str]:
    """(text, hash) of a document, (None, hash) when the table already holds this version."""
    # Any: a pandas itertuples row with DOCUMENT_SCHEMA's fields
    if doc.kind == ROW_KIND:
        if not isinstance(doc.text, str) or not doc.text.strip():
            raise SkipFile("empty: no text to index")
        digest = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
        return (None if hashes.get(doc.source) == digest else doc.text), digest
    data = _file_bytes(doc, max_file_mb)
    digest = hashlib.sha256(data).hexdigest()
    if hashes.get(doc.source) == digest:
        return None, digest
    return read_document(Path(doc.path or doc.source), data=data), digest


def _file_bytes(doc: Any, max_file_mb: float) -> bytes:
    # Any: as in _read
    if not isinstance(doc.content, bytes):
        return read_file_bytes(Path(doc.path), max_file_mb)
    if str(doc.kind).lower() not in SUPPORTED_SUFFIXES:  # read by Spark: the same limits as read_file_bytes
        raise SkipFile(f"unsupported file type {doc.kind or '(none)'!r}")
    if len(doc.content) > max_file_mb * 1024 * 1024:
        raise SkipFile(f"too large: {len(doc.content) / 1e6:.1f} MB > {max_file_mb} MB limit")
    return doc.content


_COLUMNS = [part.split()[0] for part in OUTPUT_SCHEMA.split(", ")]


def _status(source: str, status: str, reason: str | None) -> dict[str, Any]:
    return {**dict.fromkeys(_COLUMNS), "source": source, "status": status, "reason": reason}


def _frame(chunks: list[Chunk], vectors: Any, statuses: list[dict[str, Any]]) -> pd.DataFrame:
    """The output rows of one batch in OUTPUT_SCHEMA's column order."""
    # Any: a float32 matrix with one row per chunk, or None without embeddings
    import pandas as pd

    rows = [
        {
            "id": c.id,
            "text": c.text,
            "source": c.metadata["source"],
            "chunk_index": c.metadata["chunk_index"],
            "file_hash": c.metadata["file_hash"],
            "type": c.metadata["type"],
            "embedding": None if vectors is None else vectors[i].tolist(),
            "status": "chunk",
            "reason": None,
        }
        for i, c in enumerate(chunks)
    ]
    frame = pd.DataFrame(rows + statuses, columns=_COLUMNS)
    frame["chunk_index"] = frame["chunk_index"].astype("Int32")  # status rows have none
    return frame
