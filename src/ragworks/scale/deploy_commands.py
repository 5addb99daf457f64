"""The Databricks commands of the CLI: `deploy` and `vector-search create-index`; `register(app)` adds them.

Example:
    $ ragworks deploy --model-uri models:/main.agents.rag/3 --endpoint rag-agent \\
        --env OPENAI_API_KEY={{secrets/rag/openai}}
    $ ragworks chat --endpoint rag-agent "What is hybrid search?"
    $ ragworks vector-search create-index --table main.docs.chunks --endpoint vs \\
        --index main.docs.chunks_index --embeddings minilm
"""

from __future__ import annotations

from typing import Annotated

import typer

from ragworks.errors import ConfigError

WORKLOAD_SIZES = ("Small", "Medium", "Large")


def register(app: typer.Typer) -> None:
    """Add `deploy` and the `vector-search` group to the CLI."""
    from ragworks.cli_errors import handle_errors
    from ragworks.scale.vector_index_commands import vector_search_app

    app.command("deploy")(handle_errors(deploy_command))
    app.add_typer(vector_search_app(), name="vector-search")


def deploy_command(
    model_uri: Annotated[
        str, typer.Option("--model-uri", help="models:/NAME/VERSION or models:/NAME@ALIAS (registered).")
    ],
    endpoint: Annotated[str, typer.Option("--endpoint", help="The serving endpoint to create or update.")],
    workload_size: Annotated[
        str, typer.Option("--workload-size", help="Small | Medium | Large (concurrency 4, 8-16, 16-64).")
    ] = "Small",
    scale_to_zero: Annotated[
        bool,
        typer.Option("--scale-to-zero/--no-scale-to-zero", help="Let the endpoint scale to zero when idle."),
    ] = True,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            "-e",
            help="KEY={{secrets/scope/key}} for the served model (repeatable; secret references only).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the endpoint to be ready.")
    ] = 1800.0,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0, help="Seconds between state checks.")
    ] = 10.0,
    smoke: Annotated[
        bool, typer.Option("--smoke/--no-smoke", help="Send one question once it is ready.")
    ] = True,
    smoke_question: Annotated[str, typer.Option("--smoke-question", help="The smoke request's question.")] = (
        "What can you answer questions about?"
    ),
) -> None:
    """Deploy a registered agent to a Model Serving endpoint, wait until it is ready, smoke-test it.

    Creates the endpoint, or updates the one of that name. Progress goes to stderr; the endpoint's
    URL to stdout. Auth: DATABRICKS_HOST and DATABRICKS_TOKEN, or a profile.

    Example: ragworks deploy --model-uri models:/main.agents.rag/3 --endpoint rag-agent
    --env OPENAI_API_KEY={{secrets/rag/openai}}
    """
    from ragworks.scale.deploy import DeploySpec, deploy, parse_env

    size = next((s for s in WORKLOAD_SIZES if s.lower() == workload_size.strip().lower()), None)
    if size is None:
        raise ConfigError(f"--workload-size {workload_size!r}: use Small, Medium or Large.")
    spec = DeploySpec(
        model_uri=model_uri,
        endpoint=endpoint,
        workload_size=size,  # type: ignore[arg-type]  # one of WORKLOAD_SIZES
        scale_to_zero=scale_to_zero,
        env=parse_env(env or []),
    )
    result = deploy(
        spec,
        timeout_s=timeout,
        poll_s=poll_interval,
        progress=lambda line: typer.echo(line, err=True),
        smoke_question=smoke_question if smoke else None,
    )
    verb = "Created" if result.created else "Updated"
    typer.echo(f"{verb} serving endpoint {result.endpoint}: serves {result.model.uri} ({size})", err=True)
    if result.smoke_answer is not None:
        typer.echo(f"Smoke request answered: {' '.join(result.smoke_answer.split())[:200]}", err=True)
    typer.echo(f"Chat with it: ragworks chat --endpoint {result.endpoint}", err=True)
    typer.echo(result.url)
