"""`ragworks ingest SOURCES --spark --table TABLE`: load, chunk and embed on Spark, into a Delta table.

The executors run the local ingest's own reading and chunking (`_spark_worker`), so chunk ids and
texts equal those of `ragworks ingest` on the same files; the embedder is built once per Python
worker. The run is incremental by file hash: the table's (source, file_hash) pairs go to the
executors, an unchanged file is neither chunked nor embedded, and new and changed files are written
in one MERGE commit that upserts their chunks and deletes the chunks they replace (and, as the
local ingest's `--prune`, those of files gone from the folders given).

Where Delta is written from (see `delta_table`): through delta-spark when Spark has Delta Lake on
its classpath (Databricks), else through delta-rs from the driver. For delta-rs the executors' output
is first written as Parquet to a staging folder (a temp folder, or `staging`: one the driver and
every executor can reach, on a cluster), which the driver then streams into the MERGE in Arrow
batches; with delta-spark the output is checkpointed on the executors. Either way each chunk is
embedded once, however many times its rows are read afterwards.

Example:
    >>> report = spark_ingest(["docs/"], "./chunks", master="local[2]")  # doctest: +SKIP
    >>> print(report.summary())                                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ragworks.embeddings import get_embedder, resolve_embedder_name
from ragworks.errors import ConfigError, RagworksError
from ragworks.retrieval.ingest import IngestReport, _nothing_to_ingest, _under_folders, make_splitter
from ragworks.scale import _sources
from ragworks.scale._delta_spark import SparkDeltaTable, delta_available
from ragworks.scale._spark_worker import OUTPUT_SCHEMA, WorkerParams, chunk_partition
from ragworks.scale.delta_table import COLUMNS, EmbedderSpec, RustDeltaTable, arrow_schema, parse_table
from ragworks.scale.spark_session import spark_session

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)
Store = RustDeltaTable | SparkDeltaTable


@dataclass(kw_only=True)
class SparkIngestReport(IngestReport):
    """What a Spark ingest did, file by file, and what it cost."""

    table: str = ""
    table_version: int | None = None
    writer: str = ""
    """`delta-rs` or `delta-spark`."""
    embeddings_computed: int = 0
    """Chunks the executors embedded (each once; zero for unchanged files)."""
    documents: int = 0
    merge_metrics: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: `executors` (read, chunk, embed, stage), `report`, `write`."""

    def summary(self) -> str:
        """A short human-readable summary."""
        lines = super().summary().replace(" in the index ", " in the table ").splitlines()
        version = "unchanged" if self.table_version is None else f"version {self.table_version}"
        lines.insert(
            1,
            f"  Delta table {self.table} ({self.writer}, {version}): {self.embeddings_computed} "
            f"embeddings computed on the executors for {self.documents} documents",
        )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Staged:
    frame: DataFrame
    """The executors' output, computed once (Parquet read back, or a local checkpoint)."""
    folder: Path | None
    """The staging Parquet folder (delta-rs writer only)."""


def spark_ingest(
    sources: Sequence[str | Path],
    table: str,
    *,
    master: str | None = None,
    embeddings: str = "auto",
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    max_file_mb: float = 50.0,
    text_column: str = "text",
    id_column: str = "id",
    prune: bool = True,
    staging: str | Path | None = None,
    partitions: int | None = None,
) -> SparkIngestReport:
    """Load, chunk and embed SOURCES on Spark and merge the chunks into the Delta table TABLE.

    Args:
        sources: files, folders, URIs Spark can read, `table:NAME_OR_PATH` or Delta folders.
        table: the chunk table: a folder or URI, or a metastore name (needs delta-spark).
        master: Spark master when ragworks starts the session (an active session is reused).
        embeddings: `auto`, `minilm`, `hashing` or `none`; an existing table keeps its own.
        chunk_size: maximum characters per chunk.
        chunk_overlap: characters shared by neighbouring chunks.
        max_file_mb: larger files are skipped.
        text_column: the text column of table sources.
        id_column: the column naming each row of a table source (its chunks' `source`).
        prune: delete the chunks of files under the folders given that this run did not index.
        staging: where executors stage their output for delta-rs (default: a temp folder).
        partitions: document partitions (default: 4 per core).

    Raises:
        ConfigError: bad input, no Spark, a table of other embeddings, or nothing to index.
    """
    started = time.perf_counter()
    make_splitter(chunk_size, chunk_overlap)  # fail on bad chunking before Spark starts
    names = [str(s) for s in sources]
    spark = spark_session(master)
    store = open_store(spark, table)
    spec = _embedder_for(store, embeddings, table)
    report = SparkIngestReport(embedder=spec.name, table=table, writer=_writer_name(store))
    existed = store.version() is not None
    known = store.known_hashes()
    docs, report.skipped = _sources.documents_frame(
        spark,
        names,
        text_column=text_column,
        id_column=id_column,
        partitions=partitions or 4 * spark.sparkContext.defaultParallelism,
    )
    params = WorkerParams(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, embeddings=spec.name, max_file_mb=max_file_mb
    )
    embedded = spark.sparkContext.accumulator(0)
    body = partial(
        chunk_partition, params=params, known=spark.sparkContext.broadcast(known), embedded=embedded
    )
    mark = time.perf_counter()
    with _staged(spark, docs.mapInPandas(body, OUTPUT_SCHEMA), store, staging) as staged:
        report.embeddings_computed = int(embedded.value)
        report.phases["executors"], mark = time.perf_counter() - mark, time.perf_counter()
        fresh = _fill_report(report, staged.frame, known, _sources.folder_roots(names) if prune else [])
        report.phases["report"], mark = time.perf_counter() - mark, time.perf_counter()
        if not (report.added or report.replaced or report.unchanged):
            raise ConfigError(_nothing_to_ingest(list(sources), report))
        if report.changed:
            stale = sorted(set(store.ids_of([*report.replaced, *report.removed])) - fresh)
            report.merge_metrics = _write(spark, store, staged, stale, spec, exists=existed)
            report.table_version = store.version()
        report.phases["write"] = time.perf_counter() - mark
    report.chunks_total = store.count()
    report.seconds = time.perf_counter() - started
    return report


def open_store(spark: SparkSession, table: str) -> Store:
    """The chunk table TABLE names, through delta-spark when Spark has it, else delta-rs."""
    ref = parse_table(table)
    if delta_available(spark):
        return SparkDeltaTable(spark, ref)
    if ref.path is None:
        raise ConfigError(
            f"--table {table!r} is a metastore name, which needs Delta Lake in Spark (delta-spark's jars "
            "on the classpath, as on Databricks); here give a folder instead, e.g. --table ./chunks."
        )
    return RustDeltaTable(ref.path)


def _writer_name(store: Store) -> str:
    return "delta-spark" if isinstance(store, SparkDeltaTable) else "delta-rs"


def _embedder_for(store: Store, embeddings: str, table: str) -> EmbedderSpec:
    """The embedder of this run: the table's own, or a new table's `embeddings` (refusing a mismatch)."""
    recorded = store.recorded_embedder()
    if recorded is not None:
        if embeddings != "auto" and resolve_embedder_name(embeddings) != recorded.name:
            raise ConfigError(
                f"The table {table} holds {recorded.name} embeddings ({recorded.dim} dims); this run asks "
                f"for {embeddings}. Use --embeddings {recorded.name} (or auto), or another --table."
            )
        return recorded
    embedder = get_embedder(embeddings)
    return EmbedderSpec(name=resolve_embedder_name(embeddings), dim=embedder.dim if embedder else 0)


@contextlib.contextmanager
def _staged(
    spark: SparkSession, result: DataFrame, store: Store, staging: str | Path | None
) -> Iterator[_Staged]:
    """Run the executors' job once and keep its output for the report and the write."""
    if isinstance(store, SparkDeltaTable):
        with _job_errors():
            checkpoint = result.localCheckpoint(eager=True)
        yield _Staged(frame=checkpoint, folder=None)
        return
    if staging is not None:
        Path(staging).mkdir(parents=True, exist_ok=True)
    # A folder of this run's own, inside `staging` when given, removed afterwards either way.
    folder = Path(tempfile.mkdtemp(prefix="ragworks-staging-", dir=staging)).resolve()
    try:
        with _job_errors():
            result.write.mode("overwrite").parquet((folder / "chunks").as_uri())
        yield _Staged(frame=spark.read.parquet((folder / "chunks").as_uri()), folder=folder / "chunks")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _job_errors() -> Iterator[None]:
    """A failed executors' job as one line: the Python error the executor raised, not the JVM trace."""
    try:
        yield
    except Exception as exc:  # py4j's Py4JJavaError, or pyspark's PythonException, with long traces
        lines = [ln.strip() for ln in str(exc).splitlines() if _ERROR_LINE.match(ln.strip())]
        raise RagworksError(f"The Spark job failed: {lines[-1] if lines else _first(exc)}") from exc


_ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception): ")


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _fill_report(
    report: SparkIngestReport, frame: DataFrame, known: dict[str, str], roots: list[str]
) -> set[str]:
    """Fill the report from the executors' rows; returns the ids of the new chunks of replaced sources."""
    for source, status, reason in (
        frame.where("status <> 'chunk'").select("source", "status", "reason").collect()
    ):
        if status == "unchanged":
            report.unchanged.append(source)
        else:
            report.skipped.append((source, reason))
    chunk_rows = frame.where("status = 'chunk'")
    sources = sorted(r[0] for r in chunk_rows.select("source").distinct().collect())
    report.added = [s for s in sources if s not in known]
    report.replaced = [s for s in sources if s in known]
    report.chunks_written = int(chunk_rows.count())
    report.documents = len(sources) + len(report.unchanged) + len(report.skipped)
    indexed = {*sources, *report.unchanged}
    report.removed = sorted(s for s in known if s not in indexed and _under_folders(s, list(roots)))
    if not report.replaced:
        return set()
    replaced = chunk_rows.where(chunk_rows.source.isin(report.replaced)).select("id")
    return {r[0] for r in replaced.collect()}


def _write(
    spark: SparkSession, store: Store, staged: _Staged, stale: list[str], spec: EmbedderSpec, *, exists: bool
) -> dict[str, int]:
    """Create the table, or merge the new chunks and the deletions into it in one commit."""
    if isinstance(store, SparkDeltaTable):
        from pyspark.sql import functions as F

        rows = staged.frame.where("status = 'chunk'").select(*COLUMNS)
        if exists:
            doomed = spark.createDataFrame([(i,) for i in stale], "id string")
            rows = rows.withColumn("_op", F.lit("upsert")).unionByName(
                doomed.withColumn("_op", F.lit("delete")), allowMissingColumns=True
            )
        store.write(rows, spec)
        return {}
    assert staged.folder is not None
    reader = _arrow_rows(staged.folder, stale, spec, with_op=exists)
    if not exists:
        store.create(reader)
        return {}
    return store.merge(reader)


def _arrow_rows(folder: Path, stale: list[str], spec: EmbedderSpec, *, with_op: bool) -> pa.RecordBatchReader:
    """The staged chunks (then the ids to delete) as a stream of Arrow batches in the table's schema."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    schema = arrow_schema(spec, with_op=with_op)
    staged = ds.dataset(str(folder), format="parquet")

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in staged.to_batches(columns=list(COLUMNS), filter=ds.field("status") == "chunk"):
            columns = [batch.column(c).cast(schema.field(c).type) for c in COLUMNS]
            if with_op:
                columns.append(pa.array(["upsert"] * batch.num_rows, pa.string()))
            yield pa.RecordBatch.from_arrays(columns, schema=schema)
        for start in range(0, len(stale), 4096):
            ids = stale[start : start + 4096]
            nulls = [pa.nulls(len(ids), schema.field(c).type) for c in COLUMNS[1:]]
            op = [pa.array(["delete"] * len(ids), pa.string())]
            yield pa.RecordBatch.from_arrays([pa.array(ids, pa.string()), *nulls, *op], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())
