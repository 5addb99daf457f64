"""The `ragworks batch` command; `register(app)` adds it to the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragworks.errors import RagworksError


class BatchFailedError(RagworksError):
    """Some rows of a batch failed (their `error` column says why)."""


def batch_command(
    input_path: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="Questions: a .jsonl, .csv or .parquet file or a Delta table folder; with --spark also "
            "a Parquet folder or a table name.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Answers: .jsonl, .csv or .parquet (by suffix); with --spark also a folder.",
        ),
    ],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The agent config (YAML).")] = None,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="A logged agent: models:/NAME/VERSION or runs:/ID/PATH.")
    ] = None,
    spark: Annotated[
        bool, typer.Option("--spark", help="Answer on Spark (the active session or --master).")
    ] = False,
    master: Annotated[
        str | None, typer.Option("--master", help="Spark master when ragworks starts Spark, e.g. local[4].")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Questions asked at once (on Spark: per task).")
    ] = 4,
    question_column: Annotated[
        str, typer.Option("--question-column", help="The input column holding the questions.")
    ] = "question",
    id_column: Annotated[
        str | None,
        typer.Option(
            "--id-column", help="The input column of row ids (default: id if present, else the row number)."
        ),
    ] = None,
    trace: Annotated[
        bool,
        typer.Option("--trace/--no-trace", help="Record an MLflow trace per question (ids in the output)."),
    ] = True,
    allow_errors: Annotated[
        bool,
        typer.Option("--allow-errors", help="Exit 0 even when some rows failed (they keep their error)."),
    ] = False,
) -> None:
    """Answer a table of questions with an agent: locally on a worker pool, or on Spark.

    The output has, for each input row in order: id, question, answer, sources, source_ids,
    trace_id, latency_s and error. A row whose call failed has an empty answer and its error set;
    the command then exits 1 (unless --allow-errors).

    Example: ragworks batch questions.jsonl --config agent.yaml --output answers.parquet
    """
    from ragworks.scale.batch import run_batch

    report = run_batch(
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
    )
    typer.echo(report.summary())
    if report.failed:
        message = (
            f"{report.failed} of {report.rows} rows failed (first: {report.first_error}); "
            f"their error column in {output} says why."
        )
        if not allow_errors:
            raise BatchFailedError(message + " Pass --allow-errors to exit 0 anyway.")
        typer.secho(f"Warning: {message}", fg=typer.colors.YELLOW, err=True)


def register(app: typer.Typer) -> None:
    """Add the `batch` command to the ragworks CLI."""
    from ragworks.cli_errors import handle_errors

    app.command(name="batch")(handle_errors(batch_command))
