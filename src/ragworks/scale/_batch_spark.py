"""Batch inference on Spark: each partition's questions answered by an agent built once per executor process.

The rows are numbered in input order (`zipWithIndex`), spread over the cluster's cores, answered in
`mapInPandas` by the same row code as the local pool, and put back in input order.

The agent is built from the config, or loaded with `mlflow.pyfunc.load_model` from a copy of the
logged model that the driver downloads once and ships with `SparkContext.addFile`. It is not run
through `mlflow.pyfunc.spark_udf`: the ResponsesAgent pyfunc wrapper answers only the first row of a
DataFrame and returns one response dict, which spark_udf cannot turn into a column ("All arrays must
be of the same length", MLflow 3.x), and a UDF cannot report one row's failure without failing the task.

What the executors need from the driver travels with the task: the tracking URI, whether to trace,
and the model credentials set here (OPENAI_*, DATABRICKS_*) where the executor has none of its own.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragworks.config import env_flag
from ragworks.errors import ConfigError, RagworksError
from ragworks.scale._batch_io import (
    ANSWER,
    ERROR,
    FILE_FORMATS,
    ID,
    LATENCY,
    OUTPUT_COLUMNS,
    QUESTION,
    ROW,
    SOURCE_IDS,
    SOURCES,
    TRACE_ID,
    is_delta_table,
    write_answers,
)

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from ragworks.scale.batch import BatchReport

logger = logging.getLogger(__name__)

_SHIPPED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DATABRICKS_HOST", "DATABRICKS_TOKEN")
"""Credentials the agent's model may need on executors, passed only where the executor lacks them."""
_AGENTS: dict[str, Any] = {}
"""Per executor process: the agent of each task spec (Spark reuses Python workers across tasks)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """All an executor needs to build the agent and answer rows; pickled into each task."""

    config: dict[str, Any] | None = None
    """The agent config as JSON (config runs)."""
    model_file: str | None = None
    """The name under which `SparkContext.addFile` ships the logged model (model runs)."""
    tracking_uri: str
    trace: bool
    workers: int
    env: dict[str, str] = field(default_factory=dict, repr=False)
    """Credentials the executors lack (OPENAI_*, DATABRICKS_*): never in a repr, so never in a log line."""

    def key(self) -> str:
        """Which agent this spec builds, for the per-process cache."""
        import json

        return json.dumps([self.config, self.model_file, self.tracking_uri], sort_keys=True)


def run_on_spark(
    input_path: str,
    output: Path,
    *,
    config: dict[str, Any] | None,
    model_uri: str | None,
    master: str | None,
    workers: int,
    question_column: str,
    id_column: str | None,
    trace: bool,
) -> BatchReport:
    """Answer the questions of `input_path` on Spark and write them to `output` (a file or a folder)."""
    from ragworks.scale.spark_session import spark_session

    session = spark_session(master)
    questions = numbered_questions(
        read_input(session, input_path),
        source=input_path,
        question_column=question_column,
        id_column=id_column,
    )
    expected = questions.count()
    engine = f"spark {session.sparkContext.master}"
    with tempfile.TemporaryDirectory(prefix="ragworks-batch-") as tmp:
        spec = _task_spec(
            session, config=config, model_uri=model_uri, tmp=Path(tmp), trace=trace, workers=workers
        )
        started = time.perf_counter()
        answers = answer_frame(session, questions, spec)
        result = _write(session, answers, output)
        seconds = time.perf_counter() - started
    if len(result) != expected:  # never pass a short (or doubled) output off as the batch
        raise RagworksError(
            f"The Spark job returned {len(result)} rows for {expected} questions; {output} is incomplete."
        )
    from ragworks.scale.batch import report_of

    return report_of(result, seconds=seconds, output=output, engine=engine)


def read_input(spark: SparkSession, input_path: str) -> DataFrame:
    """A file, a folder of Parquet files, a Delta table folder (through deltalake) or a table name."""
    path = Path(input_path)
    if not path.exists():
        if "/" in input_path or Path(input_path).suffix.lower() in FILE_FORMATS:
            raise ConfigError(f"No input at {input_path}: give a .jsonl, .csv or .parquet file, or a table.")
        return _read_table_name(spark, input_path)
    if path.is_dir() and is_delta_table(path):
        from ragworks.scale._batch_io import read_table

        return spark.createDataFrame(read_table(path))
    suffix = path.suffix.lower()
    if path.is_file() and path.stat().st_size == 0:
        raise ConfigError(f"The input {input_path} is empty: it needs one question per row.")
    reader = spark.read
    if suffix in (".jsonl", ".json"):
        return reader.json(str(path))
    if suffix == ".csv":
        return reader.option("header", True).csv(str(path))
    if suffix == ".parquet" or path.is_dir():
        return reader.parquet(str(path))
    raise ConfigError(
        f"Cannot read {input_path}: the input must be .jsonl, .csv or .parquet, a Delta table "
        "or a table name."
    )


def _read_table_name(spark: SparkSession, name: str) -> DataFrame:
    try:
        return spark.table(name)
    except Exception as exc:  # pyspark's AnalysisException: no such table
        raise ConfigError(f"No input file or table named {name!r}: {_last_line(exc)}") from exc


def numbered_questions(
    frame: DataFrame, *, source: str, question_column: str, id_column: str | None
) -> DataFrame:
    """`_row` (input position), `id` and `question` of each input row, checked like a local input."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    columns = list(frame.columns)
    if question_column not in columns:
        raise ConfigError(
            f"The input {source} has no column {question_column!r} (columns: {', '.join(columns)}). "
            "Name the questions' column with --question-column."
        )
    if id_column is not None and id_column not in columns:
        raise ConfigError(
            f"The input {source} has no column {id_column!r} (columns: {', '.join(columns)}). "
            "Name the ids' column with --id-column, or leave it out to number the rows."
        )
    if not frame.head(1):
        raise ConfigError(f"The input {source} is empty (no rows): it needs one question per row.")
    chosen = id_column or (ID if ID in columns else None)
    id_type = frame.schema[chosen].dataType if chosen else LongType()
    schema = StructType(
        [StructField(ROW, LongType(), False), StructField(ID, id_type), StructField(QUESTION, StringType())]
    )
    picked = frame.select(*([chosen] if chosen else []), frame[question_column].cast("string"))
    rows = picked.rdd.zipWithIndex().map(
        lambda pair: (pair[1], pair[0][0] if chosen else pair[1], pair[0][-1])
    )
    return frame.sparkSession.createDataFrame(rows, schema)


def answer_frame(spark: SparkSession, questions: DataFrame, spec: TaskSpec) -> DataFrame:
    """The questions with their answers' columns, computed on the executors (lazy)."""
    partitions = max(2, spark.sparkContext.defaultParallelism)
    return questions.repartition(partitions).mapInPandas(
        partition_answerer(spec), schema=output_schema(questions.schema)
    )


def output_schema(questions: StructType) -> StructType:
    """The answers' Spark schema: the questions' columns, then the answer columns."""
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

    strings = ArrayType(StringType())
    return StructType(
        [
            *questions.fields,
            StructField(ANSWER, StringType()),
            StructField(SOURCES, strings),
            StructField(SOURCE_IDS, strings),
            StructField(TRACE_ID, StringType()),
            StructField(LATENCY, DoubleType()),
            StructField(ERROR, StringType()),
        ]
    )


def partition_answerer(spec: TaskSpec) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The `mapInPandas` function: each batch of questions answered by the process's agent."""

    def answer_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from ragworks.scale._batch_rows import answer_all
        from ragworks.scale.batch import answers_frame

        predict = _executor_agent(spec).predict
        try:
            for batch in batches:
                rows = answer_all(predict, list(batch[QUESTION]), workers=spec.workers, traced=spec.trace)
                yield answers_frame(batch, rows)
        finally:
            if spec.trace:
                import mlflow

                mlflow.flush_trace_async_logging()  # the worker may be reused or stopped; keep no trace back

    return answer_batches


def _executor_agent(spec: TaskSpec) -> Any:  # Any: a ResponsesAgent (built, or loaded from the model)
    """This process's agent for `spec`, built (or loaded) on first use."""
    import mlflow

    mlflow.set_tracking_uri(spec.tracking_uri)
    if spec.trace:
        mlflow.tracing.enable()
    else:
        mlflow.tracing.disable()
    for name, value in spec.env.items():
        os.environ.setdefault(name, value)
    key = spec.key()
    if key not in _AGENTS:
        from ragworks.agents.loading import load_agent

        # One agent per worker: a long-lived worker (a notebook's cluster) must not keep every earlier
        # run's agent, its index and its tool processes.
        _AGENTS.clear()

        if spec.model_file is not None:
            from pyspark import SparkFiles

            _AGENTS[key] = load_agent(model_uri=SparkFiles.get(spec.model_file))
        else:
            _AGENTS[key] = load_agent(config=spec.config)
    return _AGENTS[key]


def _task_spec(
    spark: SparkSession,
    *,
    config: dict[str, Any] | None,
    model_uri: str | None,
    tmp: Path,
    trace: bool,
    workers: int,
) -> TaskSpec:
    """The spec executors build the agent from; a logged model is downloaded once and shipped."""
    import mlflow

    model_file = None
    if model_uri is not None:
        model_file = _ship_model(spark, model_uri, tmp)
    else:
        from ragworks.agents.loading import load_agent

        load_agent(config=config)  # a bad config fails here in one line, not in every Spark task
    env = {name: value for name in _SHIPPED_ENV if (value := env_flag(name))}
    return TaskSpec(
        config=config,
        model_file=model_file,
        tracking_uri=mlflow.get_tracking_uri(),
        trace=trace,
        workers=workers,
        env=env,
    )


def _ship_model(spark: SparkSession, model_uri: str, tmp: Path) -> str:
    """Download the logged model once and hand it to every executor; returns its shipped name."""
    import uuid

    import mlflow

    target = tmp / f"ragworks-model-{uuid.uuid4().hex[:12]}"
    target.mkdir()
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))
    except Exception as exc:
        raise ConfigError(
            f"Could not load the model {model_uri!r}: {_last_line(exc)}. Check the URI "
            "(models:/<name>/<version> or runs:/<run_id>/<path>) and MLFLOW_TRACKING_URI."
        ) from exc
    if not (Path(local) / "MLmodel").is_file():
        raise ConfigError(
            f"{model_uri!r} is not an MLflow model (no MLmodel file); give a logged agent's URI."
        )
    spark.sparkContext.addFile(local, recursive=True)
    return Path(local).name


def _write(spark: SparkSession, answers: DataFrame, output: Path) -> pd.DataFrame:
    """Run the job, write the output, and return the answers' id and error columns (for the report).

    Each question is asked once: a file output is collected and put in order on the driver, and a
    folder output is persisted before Spark sorts it (a sort samples its input in a job of its own,
    which would otherwise run the agent over every row a second time).
    """
    try:
        if output.suffix.lower() in FILE_FORMATS:
            frame: pd.DataFrame = answers.toPandas()
            frame = frame.sort_values(ROW, kind="stable").reset_index(drop=True)
            write_answers(frame, output)
            return frame.loc[:, [ID, ERROR]]
        from pyspark import StorageLevel

        kept = answers.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            kept.orderBy(ROW).select(*OUTPUT_COLUMNS).write.mode("overwrite").parquet(str(output))
        finally:
            kept.unpersist()
    except RagworksError:
        raise
    except Exception as exc:  # the Spark job failed: a task's Python error, a lost executor
        raise RagworksError(f"The Spark job failed: {_last_line(exc)}") from exc
    return spark.read.parquet(str(output)).select(ID, ERROR).toPandas()


def _last_line(exc: BaseException) -> str:
    """The last meaningful line of an error (Spark's carry the Python traceback and JVM frames)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("at ", "...", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__
