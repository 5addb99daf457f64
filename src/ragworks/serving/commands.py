"""The `ragworks serve` command; `cli.py` adds it with `register(app)`.

Example:
    $ ragworks serve --config agent.yaml --port 8000
    $ ragworks serve --model-uri models:/rag-agent/1 --workers 4
    $ RAGWORKS_API_TOKEN=secret ragworks serve --config agent.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `serve` command to the ragworks CLI."""
    from ragworks.cli_errors import handle_errors

    app.command("serve")(handle_errors(serve))


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="RAGWORKS_CONFIG", help="Agent config YAML to build the agent from."
        ),
    ] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri",
            "-m",
            help="A logged ragworks model: models:/<name>/<version> or runs:/<id>/<path>.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (0.0.0.0 for all).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Server processes, each with its agent.")
    ] = 1,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds one request may take.")
    ] = 120.0,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", min=1, help="Requests in flight per process; 503 beyond.")
    ] = 64,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="Threads running the agent [default: cores for the offline model, else --max-concurrency].",
        ),
    ] = None,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, MB.")
    ] = 1.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout", min=0.1, help="Seconds a client has to send its headers and body (408 after)."
        ),
    ] = 10.0,
    max_input_chars: Annotated[
        int, typer.Option("--max-input-chars", min=1, help="Longest conversation, in characters.")
    ] = 100_000,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            help="MLflow experiment for the traces, created if missing [default: the config's "
            "tracking.experiment, else MLflow's active one].",
        ),
    ] = None,
) -> None:
    """Serve an agent: OpenAI Responses and chat completions, MLflow's /invocations, and a chat page at /.

    Set RAGWORKS_API_TOKEN to require `Authorization: Bearer <token>` on every route but /health and the page.
    """
    from ragworks.errors import ConfigError
    from ragworks.serving.app import ServeSpec
    from ragworks.serving.limits import ServingLimits
    from ragworks.serving.server import check_port, run_server

    if config is not None and model_uri is not None:
        raise ConfigError("Pass either --config or --model-uri, not both.")
    check_port(host, port)  # a busy port is one line and exit 1, before anything is loaded or served
    limits = ServingLimits(
        timeout_s=timeout,
        body_timeout_s=body_timeout,
        max_concurrency=max_concurrency,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_input_chars=max_input_chars,
        agent_threads=threads,
    )
    if experiment is None and config is not None:
        from ragworks.config import AgentConfig

        experiment = AgentConfig.from_yaml(config).tracking.experiment
    spec = ServeSpec(
        config=str(config.resolve()) if config else None,
        model_uri=model_uri,
        limits={name: getattr(limits, name) for name in limits.__dataclass_fields__},
        experiment=experiment,
    )
    where = f"model {model_uri}" if model_uri else f"config {config}" if config else "the default config"
    typer.echo(f"Serving {where} on http://{host}:{port} (chat page at /, OpenAI API at /v1)", err=True)
    run_server(spec, host=host, port=port, workers=workers, log_level=log_level)
