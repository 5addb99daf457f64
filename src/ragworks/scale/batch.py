"""Batch inference: answer a table of questions with an agent, locally on a worker pool or on Spark.

The agent comes from a config (built once and shared by the pool's threads; on Spark, once per
executor process) or from a logged model (`models:/...`, `runs:/...`). Each output row has the
input row's id and question, the answer, its sources (files and chunk ids), the trace id when
tracing is on, the latency, and `error`: a call that fails leaves an empty answer and says why.
Every input row is in the output exactly once, in the input's order.

Example:
    >>> out = Path("answers.parquet")
    >>> report = run_batch(Path("questions.jsonl"), out, config="agent.yaml")  # doctest: +SKIP
    >>> report.summary()                                                      # doctest: +SKIP
    '500 rows in 12.1 s (41.3 rows/s, local, 4 workers): 500 answered, 0 failed. Output: answers.parquet'
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragworks.errors import ConfigError
from ragworks.scale._batch_io import (
    ANSWER,
    ERROR,
    ID,
    LATENCY,
    QUESTION,
    SOURCE_IDS,
    SOURCES,
    TRACE_ID,
    check_output_path,
    read_table,
    select_questions,
    write_answers,
)
from ragworks.scale._batch_rows import AnsweredRow, answer_all

if TYPE_CHECKING:
    import pandas as pd

    from ragworks.config import AgentConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchReport:
    """What a batch did: rows answered and failed, time taken, where the output is."""

    rows: int
    failed: int
    seconds: float
    output: Path
    engine: str
    """`local, N workers` or `spark <master>`."""
    first_error: str | None = None
    """`id <id>: <error>` of the first failed row, if any."""

    @property
    def rows_per_s(self) -> float:
        """Rows finished per second, failed ones included."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"{self.rows} rows in {self.seconds:.1f} s ({self.rows_per_s:.1f} rows/s, {self.engine}): "
            f"{self.rows - self.failed} answered, {self.failed} failed. Output: {self.output}"
        )


def run_batch(
    input_path: str | Path,
    output: Path,
    *,
    config: str | Path | None = None,
    model_uri: str | None = None,
    spark: bool = False,
    master: str | None = None,
    workers: int = 4,
    question_column: str = QUESTION,
    id_column: str | None = None,
    trace: bool = True,
    progress: bool = True,
) -> BatchReport:
    """Answer every question of `input_path` and write the answers to `output`.

    Args:
        input_path: A .jsonl / .csv / .parquet file or a Delta table folder; with `spark`, also a
            folder or a table name Spark can read.
        output: A .jsonl / .csv / .parquet file; with `spark`, also a folder (Parquet files).
        config: The agent config (YAML). Exactly one of `config` and `model_uri`.
        model_uri: A logged agent: `models:/<name>/<version>`, `models:/m-<id>` or `runs:/<id>/<path>`.
        spark: Answer on Spark (the active session, or a local one on `master`).
        master: The Spark master when ragworks starts the session, e.g. `local[4]`.
        workers: Questions asked at once (locally; on Spark, within each task).
        question_column: The input column holding the questions.
        id_column: The input column of row ids; None: `id` if present, else the row number.
        trace: Record an MLflow trace per question (the trace ids are in the output).
        progress: Show a progress bar on stderr (local runs).

    Raises:
        ConfigError: Both or neither of `config` / `model_uri`, an unreadable input, a missing column,
            an empty input or an unknown output format.
    """
    if (config is None) == (model_uri is None):
        raise ConfigError("Give the agent with exactly one of --config FILE or --model-uri URI.")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    check_output_path(output, spark=spark)
    if Path(output).resolve() == Path(input_path).resolve():
        raise ConfigError(f"The output {output} is the input: name another path for the answers.")
    with _tracing(trace):
        return _run(
            input_path,
            output,
            config=config,
            model_uri=model_uri,
            spark=spark,
            master=master,
            workers=workers,
            question_column=question_column,
            id_column=id_column,
            trace=trace,
            progress=progress,
        )


def _run(
    input_path: str | Path,
    output: Path,
    *,
    config: str | Path | None,
    model_uri: str | None,
    spark: bool,
    master: str | None,
    workers: int,
    question_column: str,
    id_column: str | None,
    trace: bool,
    progress: bool,
) -> BatchReport:
    if spark:
        from ragworks.scale._batch_spark import run_on_spark

        return run_on_spark(
            str(input_path),
            output,
            config=_load_config(config) if config is not None else None,
            model_uri=model_uri,
            master=master,
            workers=workers,
            question_column=question_column,
            id_column=id_column,
            trace=trace,
        )
    return _run_locally(
        Path(input_path),
        output,
        config=config,
        model_uri=model_uri,
        workers=workers,
        question_column=question_column,
        id_column=id_column,
        trace=trace,
        progress=progress,
    )


def _run_locally(
    input_path: Path,
    output: Path,
    *,
    config: str | Path | None,
    model_uri: str | None,
    workers: int,
    question_column: str,
    id_column: str | None,
    trace: bool,
    progress: bool,
) -> BatchReport:
    from tqdm import tqdm

    from ragworks.agents.loading import load_agent

    questions = select_questions(
        read_table(input_path), source=str(input_path), question_column=question_column, id_column=id_column
    )
    agent = load_agent(config=config, model_uri=model_uri)
    started = time.perf_counter()
    with tqdm(total=len(questions), unit="row", file=sys.stderr, disable=not progress) as bar:
        rows = answer_all(
            agent.predict, list(questions[QUESTION]), workers=workers, traced=trace, on_done=bar.update
        )
    seconds = time.perf_counter() - started
    answers = answers_frame(questions, rows)
    write_answers(answers, output)
    return report_of(answers, seconds=seconds, output=output, engine=f"local, {workers} workers")


def answers_frame(questions: pd.DataFrame, rows: list[AnsweredRow]) -> pd.DataFrame:
    """The questions with their answers' columns, row for row."""
    frame = questions.copy()
    frame[ANSWER] = [r.answer for r in rows]
    frame[SOURCES] = [r.sources for r in rows]
    frame[SOURCE_IDS] = [r.source_ids for r in rows]
    frame[TRACE_ID] = [r.trace_id for r in rows]
    frame[LATENCY] = [r.latency_s for r in rows]
    frame[ERROR] = [r.error for r in rows]
    return frame


def report_of(answers: pd.DataFrame, *, seconds: float, output: Path, engine: str) -> BatchReport:
    """The report of a finished batch, from its answers."""
    failed = answers[answers[ERROR].notna()]
    first = None
    if len(failed):
        row = failed.iloc[0]
        first = f"id {row[ID]}: {row[ERROR]}"
    return BatchReport(
        rows=len(answers),
        failed=len(failed),
        seconds=seconds,
        output=output,
        engine=engine,
        first_error=first,
    )


def _load_config(config: str | Path) -> dict[str, Any]:
    """The config as plain JSON, its paths made absolute, to ship to Spark executors."""
    from ragworks.agents.prompt_registry import pinned_config
    from ragworks.config import AgentConfig

    cfg: AgentConfig = AgentConfig.load(config)
    return pinned_config(cfg).model_dump(mode="json")  # every executor on the same prompt version


@contextmanager
def _tracing(trace: bool) -> Iterator[None]:
    """MLflow tracing off for the batch when it is not to be traced, then as MLflow's settings say."""
    if trace:
        yield
        return
    import mlflow

    mlflow.tracing.disable()
    try:
        yield
    finally:
        mlflow.tracing.reset()  # back on, lazily, unless the environment turns it off


__all__ = ["BatchReport", "answers_frame", "report_of", "run_batch"]
