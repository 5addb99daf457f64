"""`ragworks index --from-table TABLE --index DIR`: a LocalIndex from a chunk table, without re-embedding.

The table's stored embeddings become the index's vectors, so the index must use the embedder the
table records (`delta_table.EMBEDDER_KEY` on its `embedding` column): another one named with
`embeddings`, or an index already in DIR with another embedder, is refused. Chunks are added in
(source, chunk_index) order with the local ingest's metadata (`source`, `file_hash`, `type`,
`chunk_index`), so the index answers as one `ragworks ingest` builds from the same files.

Example:
    >>> report = index_from_table("./chunks", "./index")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragworks.embeddings import Embedder, get_embedder, resolve_embedder_name
from ragworks.errors import ConfigError
from ragworks.retrieval import _store
from ragworks.retrieval.local import Chunk, LocalIndex, text_hash
from ragworks.scale.delta_table import COLUMNS, EmbedderSpec, RustDeltaTable, parse_table

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True, slots=True, kw_only=True)
class TableIndexReport:
    """What `index --from-table` built."""

    table: str
    index_path: str
    chunks: int
    embedder: EmbedderSpec
    seconds: float

    def summary(self) -> str:
        """One line for the terminal."""
        return (
            f"Index {self.index_path}: {self.chunks} chunks from the table {self.table} "
            f"(embeddings: {self.embedder.name}, {self.embedder.dim} dims, stored vectors reused; "
            f"{self.seconds:.1f}s)"
        )


class _StoredVectors(Embedder):
    """Hands the table's vectors to `LocalIndex.upsert` by text, in place of computing them."""

    def __init__(self, vectors: dict[str, np.ndarray], dim: int) -> None:
        self._vectors = vectors
        self.dim = dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """The stored vector of each text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[text_hash(t)] for t in texts]).astype(np.float32)


def index_from_table(
    table: str, index: str | Path, *, embeddings: str | None = None, lock_timeout: float = 600.0
) -> TableIndexReport:
    """Build (or replace) the LocalIndex in `index` from the chunk table `table` (a folder or URI).

    Raises:
        ConfigError: no chunk table there, or an embedder other than the table's is asked for.
    """
    started = time.perf_counter()
    ref = parse_table(table)
    if ref.path is None:
        raise ConfigError(
            f"--from-table {table!r} is a metastore name; give the table's folder or URI (its location), "
            "which this command reads without Spark."
        )
    store = RustDeltaTable(ref.path)
    spec = store.recorded_embedder()
    if spec is None:
        raise ConfigError(
            f"No Delta table at {table}: write one with `ragworks ingest SOURCES --spark --table`."
        )
    _check_embedder(spec, embeddings, Path(index), table)
    rows = _sorted_rows(store)
    built = _build(rows, spec)
    built.save(index, lock_timeout=lock_timeout)
    seconds = time.perf_counter() - started
    return TableIndexReport(
        table=table, index_path=str(index), chunks=len(built), embedder=spec, seconds=seconds
    )


def _check_embedder(spec: EmbedderSpec, embeddings: str | None, folder: Path, table: str) -> None:
    """Refuse an embedder other than the table's, asked for or already in the index folder."""
    if embeddings not in (None, "auto") and resolve_embedder_name(embeddings) != spec.name:
        raise ConfigError(
            f"The table {table} holds {spec.name} embeddings ({spec.dim} dims), not {embeddings}: "
            f"build the index with --embeddings {spec.name}, or re-ingest the table with {embeddings}."
        )
    if not _store.has_index(folder):
        return
    try:
        current = _store.read_manifest(folder)["embedder"]
    except (_store.DamagedIndexError, KeyError, TypeError):
        return  # a damaged index is replaced whole
    if (str(current.get("name")), int(current.get("dim", 0))) != (spec.name, spec.dim):
        raise ConfigError(
            f"The index in {folder} uses {current.get('name')} embeddings ({current.get('dim')} dims); the "
            f"table {table} holds {spec.name} ({spec.dim} dims). Give another --index, or remove {folder}."
        )


def _sorted_rows(store: RustDeltaTable) -> pa.Table:
    import pyarrow as pa

    batches = list(store.batches(list(COLUMNS)))
    if not batches:
        raise ConfigError(f"The table {store.path} holds no chunks: nothing to index.")
    rows = pa.Table.from_batches(batches)
    return rows.sort_by([("source", "ascending"), ("chunk_index", "ascending")])


def _build(rows: pa.Table, spec: EmbedderSpec) -> LocalIndex:
    """A LocalIndex of the rows, their stored vectors as its embeddings."""
    data = rows.to_pydict()
    chunks = [
        Chunk(id=i, text=t, metadata={"source": s, "file_hash": h, "type": k, "chunk_index": n})
        for i, t, s, n, h, k in zip(
            data["id"],
            data["text"],
            data["source"],
            data["chunk_index"],
            data["file_hash"],
            data["type"],
            strict=True,
        )
    ]
    if spec.name == "none":
        index = LocalIndex(embeddings=None)
        index.upsert(chunks)
        return index
    vectors = {
        text_hash(c.text): _vector(v, spec, c.id) for c, v in zip(chunks, data["embedding"], strict=True)
    }
    index = LocalIndex(embeddings=_StoredVectors(vectors, spec.dim))
    index.upsert(chunks)
    index.embedder = get_embedder(spec.name, dim=spec.dim)  # queries are embedded for real
    return index


def _vector(values: list[float] | None, spec: EmbedderSpec, chunk_id: str) -> np.ndarray:
    if values is None or len(values) != spec.dim:
        got = "none" if values is None else f"{len(values)} dimensions"
        raise ConfigError(
            f"Chunk {chunk_id} in the table has {got}, not the {spec.dim} of its {spec.name} embeddings: "
            "the table is damaged; re-ingest it."
        )
    return np.asarray(values, dtype=np.float32)
