"""SOURCES of `ingest --spark` as one DataFrame of documents (`_spark_worker.DOCUMENT_SCHEMA`).

- a local file or folder: listed on the driver by the local ingest's own `iter_files`, so source
  names and skip reasons are the same; executors read the files (local mode, or a folder every
  node mounts: /dbfs, /Volumes, NFS);
- a URI Spark can read (`s3://`, `abfss://`, `dbfs:/`, `file:/`): read by Spark's `binaryFile`
  source, named by the URI Spark reports;
- `table:NAME_OR_PATH`, or a Delta folder given as a path: one document per row, its text from
  `text_column` and its source name from `id_column`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ragworks.errors import ConfigError
from ragworks.retrieval.ingest import iter_files
from ragworks.scale._spark_worker import DOCUMENT_SCHEMA, ROW_KIND
from ragworks.scale.delta_table import local_path, parse_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TABLE_PREFIX = "table:"


def documents_frame(
    spark: SparkSession, sources: list[str], *, text_column: str, id_column: str, partitions: int
) -> tuple[DataFrame, list[tuple[str, str]]]:
    """(the documents of all sources, the (source, reason) of files skipped while listing)."""
    frames: list[DataFrame] = []
    files: list[tuple[str, str | None, None, None, str]] = []
    skipped: list[tuple[str, str]] = []
    for raw in sources:
        if raw.startswith(TABLE_PREFIX) or _is_delta_folder(raw):
            frames.append(table_documents(spark, raw.removeprefix(TABLE_PREFIX), text_column, id_column))
        elif "://" in raw or raw.startswith(("file:", "dbfs:")):
            frames.append(_uri_documents(spark, raw))
        else:
            for path, source, reason in iter_files([raw]):
                if reason is not None:
                    skipped.append((source, reason))
                else:
                    files.append((source, str(path.resolve()), None, None, path.suffix))
    if files:
        count = max(1, min(partitions, len(files)))
        frames.append(spark.createDataFrame(spark.sparkContext.parallelize(files, count), DOCUMENT_SCHEMA))
    if not frames:
        return spark.createDataFrame([], DOCUMENT_SCHEMA), skipped
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    return combined, skipped


def _is_delta_folder(raw: str) -> bool:
    folder = local_path(raw)
    return folder is not None and (folder / "_delta_log").is_dir()


def _uri_documents(spark: SparkSession, uri: str) -> DataFrame:
    from pyspark.sql import functions as F

    try:
        files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(uri)
    except Exception as exc:  # Spark's AnalysisException: the path does not exist, or no filesystem
        raise ConfigError(f"Spark cannot read {uri}: {_first_line(exc)}") from exc
    suffix = F.regexp_extract(F.col("path"), r"(\.[^./]+)$", 1)
    return files.select(
        F.col("path").alias("source"),
        F.col("path"),
        F.col("content"),
        F.lit(None).cast("string").alias("text"),
        F.lower(suffix).alias("kind"),
    )


def table_documents(spark: SparkSession, raw: str, text_column: str, id_column: str) -> DataFrame:
    """One document per row of a table: `id_column` names it, `text_column` holds its text."""
    from pyspark.sql import functions as F

    frame = read_table(spark, raw)
    for column, option in ((text_column, "--text-column"), (id_column, "--id-column")):
        if column not in frame.columns:
            raise ConfigError(
                f"The table {raw} has no column {column!r} (its columns: {', '.join(frame.columns)}). "
                f"Name the right one with {option}."
            )
    return frame.select(
        F.col(id_column).cast("string").alias("source"),
        F.lit(None).cast("string").alias("path"),
        F.lit(None).cast("binary").alias("content"),
        F.col(text_column).cast("string").alias("text"),
        F.lit(ROW_KIND).alias("kind"),
    )


def read_table(spark: SparkSession, raw: str) -> DataFrame:
    """A metastore table by name, or a Delta table at a path (delta-spark if present, else delta-rs)."""
    from ragworks.scale._delta_spark import delta_available

    ref = parse_table(raw)
    try:
        if ref.name is not None:
            return spark.table(ref.name)
        assert ref.path is not None
        if delta_available(spark):
            return spark.read.format("delta").load(ref.path)
    except Exception as exc:  # AnalysisException: no such table
        raise ConfigError(f"Cannot read the table {raw}: {_first_line(exc)}") from exc
    return _parquet_of_delta(spark, ref.path, raw)


def _parquet_of_delta(spark: SparkSession, path: str, raw: str) -> DataFrame:
    """A delta-rs table's current files read by Spark as Parquet (tables without deletion vectors)."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(path):
        raise ConfigError(f"No Delta table at {raw}: give a Delta table folder or a metastore name.")
    table = DeltaTable(path)
    features = set(table.protocol().reader_features or [])
    if features & {"deletionVectors", "columnMapping"}:
        raise ConfigError(
            f"The table {raw} uses {', '.join(sorted(features))}, which Spark without Delta Lake cannot "
            "read: run on a Spark with delta-spark (Databricks), or give files."
        )
    uris = table.file_uris()
    if not uris:
        raise ConfigError(f"The table {raw} has no rows: nothing to index.")
    return spark.read.parquet(*uris)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def folder_roots(sources: list[str]) -> list[str]:
    """The local folders among the sources (chunks of files under them that are gone are pruned)."""
    return [
        s
        for s in sources
        if not s.startswith(TABLE_PREFIX) and "://" not in s and Path(s).is_dir() and not _is_delta_folder(s)
    ]
