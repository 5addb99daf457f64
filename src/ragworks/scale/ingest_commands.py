"""Commands for the chunk table: `ingest --spark` (called by the CLI's `ingest`) and `index --from-table`.

Example:
    $ ragworks ingest docs/ --spark --master 'local[2]' --table ./chunks
    $ ragworks index --from-table ./chunks --index ./index
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragworks.cli_errors import handle_errors
from ragworks.errors import ConfigError


def run_spark_ingest(
    sources: list[str],
    *,
    spark: bool,
    table: str | None,
    master: str | None,
    embeddings: str,
    chunk_size: int,
    chunk_overlap: int,
    max_file_mb: float,
    prune: bool,
    text_column: str,
    id_column: str,
) -> None:
    """`ingest --spark`: run the Spark ingest and print its summary."""
    if not spark:
        raise ConfigError(
            "--table and --master go with --spark: add --spark, or drop them."
        )
    if not table:
        raise ConfigError("--spark writes a Delta table: add --table FOLDER (e.g. ./chunks) or a table name.")
    from ragworks.scale.spark_ingest import spark_ingest

    report = spark_ingest(
        sources,
        table,
        master=master,
        embeddings=embeddings,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        max_file_mb=max_file_mb,
        prune=prune,
        text_column=text_column,
        id_column=id_column,
    )
    typer.echo(f"Table {table}: embeddings {report.embedder}")
    typer.echo(report.summary())


def register(app: typer.Typer) -> None:
    """Add `index` to the CLI."""
    app.command("index")(index_command)


@handle_errors
def index_command(
    from_table: Annotated[
        str, typer.Option("--from-table", help="The Delta chunk table (folder or URI) of `ingest --spark`.")
    ],
    index: Annotated[
        Path, typer.Option("--index", "-i", envvar="RAGWORKS_INDEX", help="Index folder to build or replace.")
    ] = Path("./index"),
    embeddings: Annotated[
        str | None,
        typer.Option(
            "--embeddings", help="Must name the table's embedder when given (nothing is re-embedded)."
        ),
    ] = None,
    lock_timeout: Annotated[
        float, typer.Option("--lock-timeout", min=0, help="Seconds to wait for another writer of --index.")
    ] = 600.0,
) -> None:
    """Build a local index from a chunk table, reusing its stored embeddings."""
    from ragworks.scale.table_index import index_from_table

    report = index_from_table(from_table, index, embeddings=embeddings, lock_timeout=lock_timeout)
    typer.echo(report.summary())
