"""The chunk table through delta-spark, for Spark sessions with Delta Lake on the classpath (Databricks).

Feature-detected: `delta_available(spark)` asks the JVM for Delta's classes once per session; where
they are missing (pyspark from PyPI without delta-spark's jars), ingest writes through delta-rs
instead (`delta_table.RustDeltaTable`) and logs that once. The same columns, the same embedder
record on the `embedding` column, and the same one-commit MERGE as the delta-rs writer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ragworks.errors import ConfigError
from ragworks.scale.delta_table import COLUMNS, EMBEDDER_KEY, EmbedderSpec, TableRef, spec_from_metadata

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)
_detected: dict[int, bool] = {}


def delta_available(spark: SparkSession) -> bool:
    """True when this session can read and write Delta tables through delta-spark."""
    key = id(spark)
    if key not in _detected:
        try:
            from delta.tables import DeltaTable

            DeltaTable.isDeltaTable(spark, "file:/nonexistent-ragworks-probe")
            _detected[key] = True
        except Exception as exc:  # no jars: py4j says the class is not callable, or is missing
            logger.info("Delta Lake is not on Spark's classpath (%s); writing through delta-rs.", exc)
            _detected[key] = False
    return _detected[key]


class SparkDeltaTable:
    """The chunk table at a path or metastore name, read and written by Spark with delta-spark."""

    def __init__(self, spark: SparkSession, ref: TableRef) -> None:
        self.spark = spark
        self.ref = ref

    def _table(self) -> Any:
        # Any: delta.tables.DeltaTable, or None when the table does not exist yet
        from delta.tables import DeltaTable

        if self.ref.name is not None:
            return DeltaTable.forName(self.spark, self.ref.name) if self._exists() else None
        assert self.ref.path is not None
        return DeltaTable.forPath(self.spark, self.ref.path) if self._exists() else None

    def _exists(self) -> bool:
        from delta.tables import DeltaTable

        if self.ref.name is not None:
            return bool(self.spark.catalog.tableExists(self.ref.name))
        return bool(DeltaTable.isDeltaTable(self.spark, str(self.ref.path)))

    def frame(self) -> DataFrame | None:
        """The table as a DataFrame, or None when it does not exist yet."""
        table = self._table()
        if table is None:
            return None
        frame: DataFrame = table.toDF()
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ConfigError(
                f"The table {self.ref.raw} lacks the chunk columns {', '.join(missing)}: it was not "
                "written by `ragworks ingest --spark`. Give another --table."
            )
        return frame

    def recorded_embedder(self) -> EmbedderSpec | None:
        """The embedder the table's vectors come from, or None without a table."""
        frame = self.frame()
        if frame is None:
            return None
        meta = {k: str(v) for k, v in frame.schema["embedding"].metadata.items()}
        return spec_from_metadata(meta) or EmbedderSpec(name="none", dim=0)

    def known_hashes(self) -> dict[str, str]:
        """source -> file hash of what the table holds."""
        frame = self.frame()
        if frame is None:
            return {}
        return {r[0]: r[1] for r in frame.select("source", "file_hash").distinct().toLocalIterator()}

    def ids_of(self, sources: list[str]) -> list[str]:
        """The chunk ids the table holds for these sources."""
        frame = self.frame()
        if frame is None or not sources:
            return []
        return [r[0] for r in frame.where(frame.source.isin(sources)).select("id").distinct().collect()]

    def count(self) -> int:
        """How many chunks the table holds."""
        frame = self.frame()
        return 0 if frame is None else int(frame.count())

    def version(self) -> int | None:
        """The table's current version, or None without a table."""
        table = self._table()
        return None if table is None else int(table.history(1).collect()[0]["version"])

    def write(self, rows: DataFrame, spec: EmbedderSpec) -> None:
        """Create the table (rows without `_op`) or merge rows with `_op` into it, in one commit."""
        from pyspark.sql import functions as F

        meta = {EMBEDDER_KEY: spec.name, "ragworks.dim": str(spec.dim)}
        rows = rows.withColumn("embedding", F.col("embedding").alias("embedding", metadata=meta))
        table = self._table()
        if table is None:
            writer = rows.select(*COLUMNS).write.format("delta").mode("errorifexists")
            writer.saveAsTable(self.ref.name) if self.ref.name else writer.save(self.ref.path)
            return
        values = {c: f"s.{c}" for c in COLUMNS}
        (
            table.alias("t")
            .merge(rows.alias("s"), "t.id = s.id")
            .whenMatchedDelete(condition="s._op = 'delete'")
            .whenMatchedUpdate(condition="s._op = 'upsert'", set=values)
            .whenNotMatchedInsert(condition="s._op = 'upsert'", values=values)
            .execute()
        )
