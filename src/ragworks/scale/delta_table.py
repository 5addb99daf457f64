"""The chunk table: a Delta table of `id, text, source, chunk_index, file_hash, type, embedding`.

Two writers keep the same table: delta-spark when the Spark session has Delta Lake on its
classpath (Databricks; `scale/_delta_spark.py`), else delta-rs (`deltalake`) from the driver, which
needs no JVM-side package (delta-spark's Python package alone does not bring its jars). This module
is the delta-rs side and what both share: how TABLE is read (a folder or URI, or a metastore name),
the columns, and where the embedder is recorded: the `embedding` column's metadata
(`ragworks.embedder`, `ragworks.dim`), which Delta keeps in the table's schema for both writers.

Example:
    >>> ref = parse_table("./chunks")                              # doctest: +SKIP
    >>> RustDeltaTable(ref.path).recorded_embedder()               # doctest: +SKIP
    EmbedderSpec(name='minilm', dim=384)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ragworks.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable

logger = logging.getLogger(__name__)

COLUMNS = ("id", "text", "source", "chunk_index", "file_hash", "type", "embedding")
"""The chunk table's columns, in order; `type` is the file type (`md`, `pdf`) or `row` for table rows."""
EMBEDDER_KEY = "ragworks.embedder"
DIM_KEY = "ragworks.dim"
_NAME = re.compile(r"^[A-Za-z_`][\w`-]*(\.[A-Za-z_`][\w`-]*){0,2}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class TableRef:
    """TABLE as given: a Delta folder or URI (`path`), or a metastore name (`name`)."""

    raw: str
    path: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbedderSpec:
    """The embedder whose vectors a table holds (`none`, 0 for a table without embeddings)."""

    name: str
    dim: int


def parse_table(raw: str) -> TableRef:
    """Read TABLE: a path (has `/`, starts with `.` or `~`, is a URI or an existing folder) or a name.

    A metastore name is `table`, `schema.table` or `catalog.schema.table`.
    """
    text = raw.strip()
    if not text:
        raise ConfigError("--table is empty: give a Delta table folder (./chunks) or a metastore name.")
    if "/" in text or text.startswith((".", "~")) or Path(text).is_dir():
        return TableRef(raw=raw, path=str(Path(text).expanduser()) if "://" not in text else text)
    if _NAME.match(text):
        return TableRef(raw=raw, name=text)
    raise ConfigError(
        f"--table {raw!r} is neither a folder (./chunks, /data/chunks, s3://bucket/chunks) nor a "
        "metastore name (catalog.schema.table)."
    )


def arrow_schema(spec: EmbedderSpec, *, with_op: bool = False) -> pa.Schema:
    """The chunk table's Arrow schema, the embedder recorded on the `embedding` field."""
    import pyarrow as pa

    meta = {EMBEDDER_KEY: spec.name, DIM_KEY: str(spec.dim)}
    fields = [pa.field(c, pa.string()) for c in ("id", "text", "source")]
    fields += [pa.field("chunk_index", pa.int32()), pa.field("file_hash", pa.string())]
    fields += [pa.field("type", pa.string()), pa.field("embedding", pa.list_(pa.float32()), metadata=meta)]
    if with_op:  # merge input only: "upsert" for a chunk, "delete" for the id of a replaced chunk
        fields.append(pa.field("_op", pa.string()))
    return pa.schema(fields)


def spec_from_metadata(meta: dict[str, str] | None) -> EmbedderSpec | None:
    """The embedder recorded in a column's metadata, or None when there is none."""
    if not meta or EMBEDDER_KEY not in meta:
        return None
    try:
        return EmbedderSpec(name=str(meta[EMBEDDER_KEY]), dim=int(meta.get(DIM_KEY, 0)))
    except ValueError:
        return None


def local_path(path: str) -> Path | None:
    """The local folder of a path or `file:` URI; None for other URIs (s3://, abfss://, ...)."""
    if path.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", path))
    return None if "://" in path else Path(path)


class RustDeltaTable:
    """The chunk table at a folder or URI, read and written with delta-rs from the driver."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._table: DeltaTable | None = None

    def table(self) -> DeltaTable | None:
        """The Delta table, or None when there is none yet (a folder that is not one is an error)."""
        from deltalake import DeltaTable

        if self._table is None and DeltaTable.is_deltatable(self.path):
            self._table = DeltaTable(self.path)
            self._check_columns()
        elif self._table is None:
            folder = local_path(self.path)
            if folder is not None and folder.exists() and (folder.is_file() or any(folder.iterdir())):
                raise ConfigError(
                    f"{self.path} exists and is not a Delta table (no _delta_log): give a new or "
                    "empty folder, or a table written by `ragworks ingest --spark`."
                )
        return self._table

    def _check_columns(self) -> None:
        assert self._table is not None
        names = {f.name for f in self._table.schema().fields}
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise ConfigError(
                f"The Delta table {self.path} lacks the chunk columns {', '.join(missing)}: it was not "
                "written by `ragworks ingest --spark`. Give another --table."
            )

    def recorded_embedder(self) -> EmbedderSpec | None:
        """The embedder the table's vectors come from, or None without a table."""
        table = self.table()
        if table is None:
            return None
        field = next(f for f in table.schema().fields if f.name == "embedding")
        return spec_from_metadata(field.metadata) or EmbedderSpec(name="none", dim=0)

    def known_hashes(self) -> dict[str, str]:
        """source -> file hash of what the table holds (empty without a table)."""
        out: dict[str, str] = {}
        for batch in self.batches(["source", "file_hash"]):
            out.update(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True))
        return out

    def ids_of(self, sources: Iterable[str]) -> list[str]:
        """The chunk ids the table holds for these sources."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        wanted = sorted(set(sources))
        table = self.table()
        if table is None or not wanted:
            return []
        found = table.to_pyarrow_dataset().to_table(columns=["id"], filter=ds.field("source").isin(wanted))
        return [str(i) for i in pc.unique(found.column("id")).to_pylist()]

    def batches(self, columns: list[str], *, batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        """The table's rows, a batch at a time (nothing without a table)."""
        table = self.table()
        if table is None:
            return iter(())
        return iter(table.to_pyarrow_dataset().to_batches(columns=columns, batch_size=batch_size))

    def count(self) -> int:
        """How many chunks the table holds."""
        table = self.table()
        return 0 if table is None else int(table.to_pyarrow_dataset().count_rows())

    def version(self) -> int | None:
        """The table's current version, or None without a table."""
        table = self.table()
        return None if table is None else int(table.version())

    def create(self, rows: pa.RecordBatchReader) -> None:
        """Create the table from a stream of chunk rows (fails if someone created it meanwhile)."""
        from deltalake import write_deltalake

        write_deltalake(self.path, rows, mode="error")
        self._table = None

    def merge(self, rows: pa.RecordBatchReader) -> dict[str, int]:
        """Upsert rows with `_op` "upsert" and delete the ids with `_op` "delete", in one commit."""
        table = self.table()
        assert table is not None
        values = {c: f"s.{c}" for c in COLUMNS}
        metrics = (
            table.merge(rows, predicate="t.id = s.id", source_alias="s", target_alias="t")
            .when_matched_delete(predicate="s._op = 'delete'")
            .when_matched_update(updates=values, predicate="s._op = 'upsert'")
            .when_not_matched_insert(updates=values, predicate="s._op = 'upsert'")
            .execute()
        )
        self._table = None
        return {k: int(v) for k, v in metrics.items() if isinstance(v, int)}
