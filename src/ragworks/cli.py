"""The `ragworks` command line: quickstart, ingest, search, chat, serve, eval, monitor, log-model.

Example:
    $ ragworks ingest docs/ --index ./index
    $ ragworks search "how do I log an agent?" --index ./index -k 3
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ragworks import __version__
from ragworks.cli_errors import debug_enabled, handle_errors, set_debug
from ragworks.config import get_settings

app = typer.Typer(
    name="ragworks",
    help="Build, serve and evaluate retrieval-augmented agents on MLflow.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"ragworks {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """Build, serve and evaluate retrieval-augmented agents on MLflow."""
    set_debug(debug or get_settings().debug)
    logging.basicConfig(
        level=logging.DEBUG if debug_enabled() else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("bm25s", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug_enabled() else logging.WARNING)


IndexOpt = Annotated[
    Path, typer.Option("--index", "-i", envvar="RAGWORKS_INDEX", help="Index folder.", show_default=True)
]


@app.command()
@handle_errors
def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Files and folders to index (.txt .md .html .pdf); with --spark also URIs and table:NAME."
        ),
    ],
    index: IndexOpt = Path("./index"),
    embeddings: Annotated[
        str,
        typer.Option(
            "--embeddings", envvar="RAGWORKS_EMBEDDINGS", help="auto | minilm | hashing | none (new indexes)."
        ),
    ] = "auto",
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=50, help="Characters per chunk.")] = 1000,
    chunk_overlap: Annotated[
        int, typer.Option("--chunk-overlap", min=0, help="Characters shared by neighbouring chunks.")
    ] = 150,
    max_file_mb: Annotated[float, typer.Option("--max-file-mb", help="Skip files larger than this.")] = 50.0,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune/--no-prune",
            help="Remove the chunks of files under the folders given that this run did not index "
            "(deleted, or now skipped). Local index only.",
        ),
    ] = True,
    lock_timeout: Annotated[
        float,
        typer.Option("--lock-timeout", min=0, help="Seconds to wait for another ingest into --index."),
    ] = 600.0,
    vector_search: Annotated[
        str | None,
        typer.Option(
            "--vector-search",
            help="Write to this Databricks Vector Search Direct Access index (catalog.schema.index), "
            "not to --index.",
        ),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="The Vector Search endpoint of --vector-search.")
    ] = None,
    spark: Annotated[
        bool, typer.Option("--spark", help="Load, chunk and embed on Spark into the Delta table --table.")
    ] = False,
    master: Annotated[
        str | None, typer.Option("--master", help="Spark master, e.g. local[4] (default: the active one).")
    ] = None,
    table: Annotated[
        str | None, typer.Option("--table", help="With --spark: the Delta chunk table (folder, URI or name).")
    ] = None,
    text_column: Annotated[
        str, typer.Option("--text-column", help="With --spark: the text column of table: sources.")
    ] = "text",
    id_column: Annotated[
        str, typer.Option("--id-column", help="With --spark: the column naming each row of table: sources.")
    ] = "id",
) -> None:
    """Index files and folders into a local index or a Vector Search index (unchanged files are skipped)."""
    if spark or table is not None or master is not None:
        from ragworks.scale.ingest_commands import run_spark_ingest

        run_spark_ingest(
            paths, spark=spark, table=table, master=master, embeddings=embeddings, chunk_size=chunk_size,
            chunk_overlap=chunk_overlap, max_file_mb=max_file_mb, prune=prune, text_column=text_column,
            id_column=id_column,
        )
        return
    if vector_search is not None:
        from ragworks.retrieval.vector_search_ingest import ingest_to_vector_search

        report = ingest_to_vector_search(
            paths,
            vector_search,
            endpoint=endpoint,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            embeddings=None if embeddings in ("auto", "none") else embeddings,
            max_file_mb=max_file_mb,
        )
        typer.echo(f"Vector Search index {vector_search}: embeddings {report.embedder}")
        typer.echo(report.summary())
        return
    from ragworks.retrieval.ingest import ingest as run_ingest

    report = run_ingest(
        paths,
        index,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        embeddings=embeddings,
        max_file_mb=max_file_mb,
        prune=prune,
        lock_timeout=lock_timeout,
    )
    typer.echo(f"Index {index}: embeddings {report.embedder}")
    typer.echo(report.summary())


@app.command()
@handle_errors
def search(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    index: IndexOpt = Path("./index"),
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many chunks to return.")] = 5,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="Metadata filter FIELD=VALUE, FIELD=A,B, FIELD!=V, FIELD>=N."),
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="hybrid | bm25 | dense (default: hybrid, or the config's).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Search with the retriever an agent config names (any backend), not --index.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of results.")] = False,
) -> None:
    """Search an index (a local folder, or the retriever of an agent config) and print the best chunks."""
    from ragworks.retrieval.filters import parse_filter_arg

    parsed = dict(parse_filter_arg(f) for f in filters or []) or None
    if config is not None:
        from ragworks.config import AgentConfig
        from ragworks.retrieval import get_retriever

        cfg = AgentConfig.from_yaml(config)
        if mode:  # validated like the file itself
            cfg = AgentConfig.load(
                {**cfg.model_dump(), "retriever": {**cfg.retriever.model_dump(), "mode": mode}}
            )
        # Filters only when given: not every LangChain retriever takes them.
        extra: dict[str, Any] = {"filters": parsed} if parsed else {}
        docs = get_retriever(cfg).invoke(query, k=k, **extra)
    else:
        from ragworks.retrieval.local import LocalIndex

        docs = LocalIndex.load(index).search(query, k=k, filters=parsed, mode=mode or "hybrid")  # type: ignore[arg-type]
    if as_json:
        rows = [
            {"id": d.id, "score": d.metadata.get("score"), "text": d.page_content, "metadata": d.metadata}
            for d in docs
        ]
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not docs:
        typer.echo("No results.")
    for rank, doc in enumerate(docs, 1):
        where = f"{doc.metadata.get('source', '?')}#{doc.metadata.get('chunk_index', '?')}"
        score = doc.metadata.get("score")
        typer.echo(
            f"{rank}. [{score:.3f}] {where}" if isinstance(score, (int, float)) else f"{rank}. {where}"
        )
        typer.echo("   " + " ".join(doc.page_content.split())[:300])


def _register_commands() -> None:
    # Each area owns its commands; they import their heavy dependencies only when run.
    from ragworks.agents import commands as agent_commands
    from ragworks.agents import prompt_commands
    from ragworks.eval import commands as eval_commands
    from ragworks.eval import monitor_commands, tune_commands
    from ragworks.scale import batch_commands, deploy_commands, ingest_commands
    from ragworks.serving import commands as serving_commands

    agent_commands.register(app)
    serving_commands.register(app)
    eval_commands.register(app)
    monitor_commands.register(app)
    tune_commands.register(app)
    batch_commands.register(app)
    ingest_commands.register(app)
    prompt_commands.register(app)
    deploy_commands.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BrokenPipeError:  # `ragworks search ... | head`
        sys.exit(0)
