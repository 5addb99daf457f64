"""`ragworks vector-search create-index`: a Delta Sync index over a table of chunks, and its retriever config.

Example:
    $ ragworks vector-search create-index --table main.docs.chunks --endpoint vs \\
        --index main.docs.chunks_index --embeddings minilm
"""

from __future__ import annotations

from typing import Annotated

import typer

from ragworks.errors import ConfigError


def vector_search_app() -> typer.Typer:
    """The `vector-search` command group."""
    from ragworks.cli_errors import handle_errors

    group = typer.Typer(help="Databricks Vector Search indexes.", no_args_is_help=True)
    group.command("create-index")(handle_errors(create_index_command))
    return group


def create_index_command(
    table: Annotated[str, typer.Option("--table", help="The source Delta table (catalog.schema.table).")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="The Vector Search endpoint.")],
    index: Annotated[str, typer.Option("--index", help="The new index's name (catalog.schema.index).")],
    primary_key: Annotated[str, typer.Option("--primary-key", help="The table's primary key column.")] = "id",
    text_column: Annotated[str, typer.Option("--text-column", help="The column of chunk texts.")] = "text",
    embedding_column: Annotated[
        str, typer.Option("--embedding-column", help="The column of precomputed vectors.")
    ] = "embedding",
    embeddings: Annotated[
        str | None,
        typer.Option(
            "--embeddings", help="The embedder that made the vectors (minilm | hashing); it embeds queries."
        ),
    ] = None,
    embedding_dimension: Annotated[
        int | None,
        typer.Option("--embedding-dimension", min=1, help="The vectors' size (default: --embeddings')."),
    ] = None,
    embedding_source_column: Annotated[
        str | None,
        typer.Option("--embedding-source-column", help="Let Vector Search embed this text column instead."),
    ] = None,
    embedding_model_endpoint: Annotated[
        str | None,
        typer.Option("--embedding-model-endpoint", help="The serving endpoint that embeds it."),
    ] = None,
    pipeline_type: Annotated[
        str, typer.Option("--pipeline-type", help="TRIGGERED (sync on demand) | CONTINUOUS.")
    ] = "TRIGGERED",
) -> None:
    """Create a Delta Sync index over a table of chunks and print the retriever config that queries it.

    Example: ragworks vector-search create-index --table main.docs.chunks --endpoint vs
    --index main.docs.chunks_index --embeddings minilm
    """
    from ragworks.retrieval.vector_search_create import IndexRequest, create_delta_sync_index, retriever_yaml

    pipeline = pipeline_type.strip().upper()
    if pipeline not in ("TRIGGERED", "CONTINUOUS"):
        raise ConfigError(f"--pipeline-type {pipeline_type!r}: use TRIGGERED or CONTINUOUS.")
    request = IndexRequest(
        table=table,
        endpoint=endpoint,
        index=index,
        primary_key=primary_key,
        text_column=text_column,
        embedding_column=embedding_column,
        embedding_dimension=embedding_dimension,
        embeddings=embeddings,
        embedding_source_column=embedding_source_column,
        embedding_model_endpoint=embedding_model_endpoint,
        pipeline_type=pipeline,  # type: ignore[arg-type]  # checked above
    )
    created = create_delta_sync_index(request)
    state = (created.description.get("status") or {}).get("detailed_state", "created")
    typer.echo(f"Created Delta Sync index {index} over {table} on endpoint {endpoint} ({state}).", err=True)
    typer.echo("Point the agent's config at it:", err=True)
    typer.echo(retriever_yaml(created), nl=False)
