"""`ragworks prompts push FILE --name NAME` and `ragworks prompts list`: the MLflow prompt registry.

Example:
    ragworks prompts push support.txt --name support --alias production --commit-message "shorter"
    ragworks prompts list
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ragworks.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import PromptVersion

PREFIX = "prompts:/"


def push_prompt(
    path: Path, *, name: str, alias: str | None = None, commit_message: str | None = None
) -> PromptVersion:
    """Register the text of `path` as a new version of prompt `name`, and point `alias` at it.

    Raises:
        ConfigError: the file is missing or empty, or the registry refused or could not be reached.
    """
    import mlflow

    try:
        template = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"Prompt file {path} does not exist (or is a folder).") from None
    if not template.strip():
        raise ConfigError(f"Prompt file {path} is empty: write the system prompt's text in it.")
    try:
        version = mlflow.genai.register_prompt(name=name, template=template, commit_message=commit_message)
        if alias:
            mlflow.genai.set_prompt_alias(name=name, alias=alias, version=int(version.version))
    except Exception as exc:  # MlflowException (bad name, refused) or a registry that cannot be reached
        raise ConfigError(
            f"Could not register prompt {name!r} in the prompt registry at {mlflow.get_registry_uri()}: "
            f"{exc}. Check the name and MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI."
        ) from exc
    return version


def push_command(
    file: Annotated[Path, typer.Argument(help="A text file: the system prompt's template.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The prompt's name in the registry.")],
    alias: Annotated[
        str | None, typer.Option("--alias", help="Point this alias (e.g. production) at the new version.")
    ] = None,
    commit_message: Annotated[
        str | None, typer.Option("--commit-message", "-m", help="What changed in this version.")
    ] = None,
) -> None:
    """Register FILE as a new version of prompt NAME and print its URI, for `system_prompt:` in a config.

    Example: ragworks prompts push support.txt --name support --alias production
    """
    version = push_prompt(file, name=name, alias=alias, commit_message=commit_message)
    typer.echo(f"{PREFIX}{version.name}/{version.version}")
    if alias:
        typer.echo(f"{PREFIX}{version.name}@{alias}")


def list_command(
    max_results: Annotated[int, typer.Option("--max", min=1, help="At most this many prompts.")] = 100,
) -> None:
    """List the registry's prompts: name, latest version URI and its commit message.

    Example: ragworks prompts list
    """
    for line in prompt_lines(max_results=max_results):
        typer.echo(line)


def prompt_lines(*, max_results: int = 100) -> list[str]:
    """One line per registered prompt: its latest version's URI and commit message."""
    import mlflow
    from mlflow import MlflowClient

    try:
        prompts = list(mlflow.genai.search_prompts(max_results=max_results))
        client = MlflowClient()
        lines = []
        for prompt in sorted(prompts, key=lambda p: p.name):
            versions = list(client.search_prompt_versions(prompt.name))
            latest = max(versions, key=lambda v: int(v.version), default=None)
            if latest is None:
                continue
            message = f"  {latest.commit_message}" if latest.commit_message else ""
            lines.append(f"{PREFIX}{prompt.name}/{latest.version}{message}")
    except Exception as exc:  # a registry that cannot be reached or refuses the search
        raise ConfigError(
            f"Could not list the prompt registry at {mlflow.get_registry_uri()}: {exc}. "
            "Check MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI."
        ) from exc
    return lines or ["(no prompts registered)"]


def register(app: typer.Typer) -> None:
    """Add the `prompts` group (`push`, `list`) to the ragworks CLI."""
    from ragworks.cli_errors import handle_errors

    prompts_app = typer.Typer(
        name="prompts", help="Version system prompts in MLflow's prompt registry.", no_args_is_help=True
    )
    prompts_app.command(name="push")(handle_errors(push_command))
    prompts_app.command(name="list")(handle_errors(list_command))
    app.add_typer(prompts_app, name="prompts")
