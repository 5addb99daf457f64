"""System prompts from MLflow's prompt registry: `system_prompt: prompts:/NAME/VERSION` or `.../NAME@ALIAS`.

The prompt is loaded once, when the agent is built (`resolve_system_prompt`), and pinned to the version
it resolved to: an alias that moves later changes a newly built agent, never a running one. Each
request's trace is linked to the pinned version (`link_to_trace`), as `load_prompt` inside a trace
links it; an eval run is linked once, when it starts; a logged agent lists the same version in
`mlflow.pyfunc.log_model(prompts=...)` (`pinned_prompt_uris`).

A template may use the variables in `PROMPT_VARIABLES` (`{{not_found}}`, `{{search_tool}}`,
`{{agent_name}}`); one that expects any other is refused when the agent is built.

Example:
    >>> is_registry_uri("prompts:/support/3"), is_registry_uri("You are a careful assistant.")
    (True, False)
    >>> prompt = resolve_system_prompt("prompts:/support@production")   # doctest: +SKIP
    >>> prompt.uri                                                       # doctest: +SKIP
    'prompts:/support/3'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragworks.agents import _prompt_link
from ragworks.agents.prompts import NOT_FOUND
from ragworks.config import AgentConfig
from ragworks.errors import ConfigError
from ragworks.tools.retriever_tool import RETRIEVER_TOOL_NAME

if TYPE_CHECKING:
    from mlflow.entities.model_registry import PromptVersion

logger = logging.getLogger(__name__)

PREFIX = "prompts:/"
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
_logged: set[str] = set()
"""The kinds of linking trouble already logged (each is logged once per process)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemPrompt:
    """The system prompt an agent is built with: its text, and the registry version it came from."""

    text: str | None
    """The text the model gets as its system message (None: the built-in prompt)."""
    version: PromptVersion | None = None
    """The registry prompt version, pinned when the agent was built (None: not from the registry)."""

    @property
    def uri(self) -> str | None:
        """The pinned `prompts:/NAME/VERSION` URI, or None when the prompt is not from the registry."""
        return None if self.version is None else f"{PREFIX}{self.version.name}/{self.version.version}"


def is_registry_uri(value: str | None) -> bool:
    """Whether a `system_prompt` value names a registry prompt rather than being the prompt's text."""
    return bool(value) and str(value).strip().startswith(PREFIX)


def prompt_variables(cfg: AgentConfig) -> dict[str, str]:
    """The template variables ragworks fills in a registry prompt for an agent built from `cfg`."""
    return {"not_found": NOT_FOUND, "search_tool": RETRIEVER_TOOL_NAME, "agent_name": cfg.name}


PROMPT_VARIABLES = tuple(sorted(prompt_variables(AgentConfig())))
"""The names a registry prompt's template may use."""


def resolve_system_prompt(value: str | None, *, variables: Mapping[str, str] | None = None) -> SystemPrompt:
    """The system prompt a config's `system_prompt` stands for: its text, or a registry prompt loaded now.

    Raises:
        ConfigError: the prompt, version or alias is unknown, the registry cannot be reached, the
            prompt is a chat template, or its template expects a variable ragworks does not provide.
    """
    if not is_registry_uri(value):
        return SystemPrompt(text=value)
    assert value is not None
    uri = value.strip()
    version = load_registry_prompt(uri)
    return SystemPrompt(text=render(version, uri=uri, variables=variables or {}), version=version)


def load_registry_prompt(uri: str) -> PromptVersion:
    """Load `uri` from MLflow's prompt registry, without linking it to anything yet.

    Raises:
        ConfigError: unknown prompt, version or alias, a malformed URI, or a registry that cannot be reached.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow.genai.load_prompt(uri, link_to_model=False)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND_CODES:
            raise ConfigError(
                f"system_prompt {uri!r} is not in the prompt registry at {_registry()}: {exc.message} "
                "Register it with `ragworks prompts push FILE --name NAME`, check the name, version or "
                "alias with `ragworks prompts list`, or point MLFLOW_TRACKING_URI at the right store."
            ) from None
        raise _unreachable(uri, exc) from exc
    except Exception as exc:  # connection errors, timeouts, a store that cannot be opened
        raise _unreachable(uri, exc) from exc
    if version is None:  # not raised by MLflow today; kept so a quiet miss is never a None prompt
        raise ConfigError(f"system_prompt {uri!r} is not in the prompt registry at {_registry()}.")
    return version


def _unreachable(uri: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"Could not load system_prompt {uri!r}: the prompt registry at {_registry()} failed "
        f"({type(exc).__name__}: {exc}). Check MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI and that the "
        "server is up."
    )


def _registry() -> str:
    import mlflow

    return str(mlflow.get_registry_uri())


def render(version: PromptVersion, *, uri: str, variables: Mapping[str, str]) -> str:
    """The text of a text prompt with its variables filled; every variable must be one ragworks provides."""
    if not version.is_text_prompt:
        raise ConfigError(
            f"system_prompt {uri!r} is a chat prompt (a list of messages); register the system prompt "
            "as a text template instead (`ragworks prompts push FILE --name NAME`)."
        )
    missing = sorted(set(version.variables) - set(variables))
    if missing:
        allowed = ", ".join("{{" + n + "}}" for n in sorted(variables)) or "none"
        raise ConfigError(
            f"system_prompt {uri!r} (version {version.version}) expects "
            f"{', '.join('{{' + n + '}}' for n in missing)}, which ragworks does not provide. "
            f"A system prompt may use: {allowed}. Edit the template and push a new version."
        )
    values = {n: variables[n] for n in version.variables}
    return str(version.format(allow_partial=False, use_jinja_sandbox=True, **values))


def link_to_trace(versions: Sequence[PromptVersion]) -> None:
    """Link pinned prompt versions to the active trace, as MLflow does when one is loaded inside it.

    Through MLflow's trace manager (`agents._prompt_link`), else `mlflow.genai.load_prompt` from its
    cache. A failure to link never fails the request; it is logged once.
    """
    if not versions:
        return
    import mlflow

    trace_id = mlflow.get_active_trace_id()
    if trace_id is None:
        return
    try:
        if _prompt_link.link(trace_id, versions):
            return
        _log_once("fallback", "This MLflow has no trace prompt hook; prompts are linked with load_prompt.")
        for version in versions:
            mlflow.genai.load_prompt(f"{PREFIX}{version.name}/{version.version}", link_to_model=False)
    except Exception as exc:  # linking is bookkeeping; the answer must not depend on it
        names = ", ".join(f"{v.name}/{v.version}" for v in versions)
        _log_once("failed", f"Could not link prompt {names} to the trace: {exc}")


def _log_once(kind: str, message: str) -> None:
    if kind not in _logged:
        _logged.add(kind)
        logger.warning("%s", message)


def pinned_prompt_uris(cfg: AgentConfig) -> list[str]:
    """The `prompts:/NAME/VERSION` URIs a config's registry prompt resolves to now (for `log_model`)."""
    if not is_registry_uri(cfg.system_prompt):
        return []
    uri = resolve_system_prompt(cfg.system_prompt, variables=prompt_variables(cfg)).uri
    return [uri] if uri else []


def pinned_config(cfg: AgentConfig) -> AgentConfig:
    """`cfg` with a registry prompt's alias resolved to its version now, for agents built elsewhere later.

    Executors build their own agents: with `prompts:/NAME@ALIAS` each would resolve the alias when it
    starts, so an alias moved mid-run would give partitions different prompts than the run records.
    """
    uris = pinned_prompt_uris(cfg)
    return cfg.model_copy(update={"system_prompt": uris[0]}) if uris else cfg


__all__ = [
    "PREFIX",
    "PROMPT_VARIABLES",
    "SystemPrompt",
    "is_registry_uri",
    "link_to_trace",
    "load_registry_prompt",
    "pinned_config",
    "pinned_prompt_uris",
    "prompt_variables",
    "render",
    "resolve_system_prompt",
]
