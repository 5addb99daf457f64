"""The registry system prompt an eval run used, as run params, so runs of prompt versions can be compared."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragworks.agents.prompt_registry import is_registry_uri, load_registry_prompt
from ragworks.config import AgentConfig
from ragworks.eval._targets import Target, is_model_uri


def prompt_params(target: Target) -> dict[str, str]:
    """`system_prompt` (as configured) and `system_prompt_version` (pinned) when the target uses one."""
    pinned = list(getattr(target, "prompts", None) or [])  # a built RagResponsesAgent
    value = _configured(target)
    if not is_registry_uri(value):
        return {}
    assert value is not None
    if not pinned:  # a config: the version it resolves to (MLflow's cache holds it once the agent is built)
        pinned = [load_registry_prompt(value.strip())]
    version = pinned[0]
    pinned_uri = f"prompts:/{version.name}/{version.version}"
    return {"system_prompt": value.strip(), "system_prompt_version": pinned_uri}


def _configured(target: Target) -> str | None:
    config: Any = getattr(target, "config", None)  # Any: an agent's config, or none
    if isinstance(config, AgentConfig):
        return config.system_prompt
    if isinstance(target, str) and is_model_uri(target):
        return None
    if isinstance(target, Mapping):
        return AgentConfig.load(dict(target)).system_prompt
    if isinstance(target, (AgentConfig, str, Path)):
        return AgentConfig.load(target).system_prompt
    return None


def log_prompt_params(target: Target) -> None:
    """Log `prompt_params(target)` into the active MLflow run and link the run to that prompt version.

    Nothing is logged when the target uses no registry prompt.
    """
    import mlflow

    params = prompt_params(target)
    run = mlflow.active_run()
    if params and run is not None:
        mlflow.log_params(params)
        mlflow.MlflowClient().link_prompt_version_to_run(run.info.run_id, params["system_prompt_version"])
