"""Deploy a registered agent to a Databricks Model Serving endpoint through databricks-sdk.

`deploy(spec)` creates the endpoint, or updates the config of one that exists, serving one entity
(the model's name and version, a workload size, scale to zero, environment variables that are
secret references), waits until it is ready, sends one smoke request, and returns its URL.

Environment variables are only ever secret references (`{{secrets/scope/key}}`): Model Serving
resolves them in the container, so no secret value is in a request body, a log line or an error.

Example:
    >>> spec = DeploySpec(model_uri="models:/main.agents.rag/3", endpoint="rag-agent",
    ...                   env=parse_env(["OPENAI_API_KEY={{secrets/rag/openai}}"]))
    >>> result = deploy(spec, progress=print)                          # doctest: +SKIP
    >>> result.url                                                     # doctest: +SKIP
    'https://my-workspace.cloud.databricks.com/serving-endpoints/rag-agent/invocations'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ragworks._databricks import workspace_client as shared_workspace_client
from ragworks.errors import ConfigError, DeploymentError
from ragworks.scale._serving_wait import Progress, explain_api_error, wait_until_ready

logger = logging.getLogger(__name__)

WorkloadSize = Literal["Small", "Medium", "Large"]
SMOKE_QUESTION = "What can you answer questions about?"
_SECRET_REF = re.compile(r"\{\{secrets/[^/{}\s]+/[^/{}\s]+\}\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRef:
    """A registered model version: what the endpoint serves."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        """`models:/NAME/VERSION`."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploySpec:
    """What to deploy, and where."""

    model_uri: str
    """`models:/NAME/VERSION`, or `models:/NAME@ALIAS` (resolved through MLflow's model registry)."""
    endpoint: str
    workload_size: WorkloadSize = "Small"
    scale_to_zero: bool = True
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables of the served model: name -> secret reference (see `parse_env`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeployResult:
    """A deployed endpoint."""

    endpoint: str
    model: ModelRef
    url: str
    """The endpoint's invocation URL."""
    created: bool
    """True when this deployment created the endpoint, False when it updated one."""
    smoke_answer: str | None
    """The text the smoke request got back (None when it was skipped)."""


def parse_model_uri(uri: str, *, resolve_alias: Callable[[str, str], str] | None = None) -> ModelRef:
    """The model version a `models:/NAME/VERSION` or `models:/NAME@ALIAS` URI names.

    Raises:
        ConfigError: the URI is of another form, or its alias cannot be resolved.
    """
    match = _MODEL_URI.fullmatch(uri.strip())
    if match is None:
        raise ConfigError(
            f"--model-uri {uri!r}: name a registered model version, models:/NAME/VERSION or "
            "models:/NAME@ALIAS (e.g. models:/main.agents.rag/3)."
        )
    name, version, alias = match["name"], match["version"], match["alias"]
    if version is None:
        version = (resolve_alias or _registry_alias)(name, alias)
    return ModelRef(name=name, version=str(version))


def _registry_alias(name: str, alias: str) -> str:
    """The version an alias points at, from MLflow's model registry (MLFLOW_REGISTRY_URI / tracking)."""
    import mlflow

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except Exception as exc:  # MlflowException: unknown model or alias, or the registry is unreachable
        raise ConfigError(
            f"Cannot resolve models:/{name}@{alias} in MLflow's model registry ({exc}). "
            "Check the name and alias, and MLFLOW_REGISTRY_URI (databricks-uc for Unity Catalog)."
        ) from None


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """`KEY={{secrets/scope/key}}` items as a dict; a plain value is refused (and never echoed).

    Raises:
        ConfigError: an item is not `NAME=`, or its value is not a secret reference.
    """
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.fullmatch(name):
            raise ConfigError(
                "--env takes NAME={{secrets/<scope>/<key>}}, "
                "e.g. --env OPENAI_API_KEY={{secrets/rag/openai}}."
            )
        if not _SECRET_REF.fullmatch(value.strip()):
            raise ConfigError(
                f"--env {name}: the value must be a secret reference {{{{secrets/<scope>/<key>}}}}, "
                "not a plain value, which would be stored in the endpoint's config in clear. Store it with "
                "`databricks secrets put-secret <scope> <key>` and pass "
                f"--env {name}={{{{secrets/<scope>/<key>}}}}."
            )
        env[name] = value.strip()
    return env


def served_entity(spec: DeploySpec, model: ModelRef) -> Any:  # Any: databricks-sdk's ServedEntityInput
    """The served entity of a deployment: the model version, its compute and its environment."""
    from databricks.sdk.service.serving import ServedEntityInput

    return ServedEntityInput(
        entity_name=model.name,
        entity_version=model.version,
        workload_size=spec.workload_size,
        scale_to_zero_enabled=spec.scale_to_zero,
        environment_vars=dict(spec.env) or None,
    )


def workspace_client() -> Any:  # Any: databricks.sdk.WorkspaceClient, imported lazily
    """databricks-sdk's client from its unified auth (DATABRICKS_HOST/TOKEN, a profile, OAuth)."""
    return shared_workspace_client("ragworks deploy")


def deploy(
    spec: DeploySpec,
    *,
    client: Any = None,  # Any: a databricks.sdk.WorkspaceClient; default: workspace_client()
    timeout_s: float = 1800.0,
    poll_s: float = 10.0,
    progress: Progress = lambda line: None,
    smoke_question: str | None = SMOKE_QUESTION,
) -> DeployResult:
    """Create or update the endpoint, wait until it serves the model, smoke-test it; return its URL.

    Raises:
        ConfigError: the model URI or env is invalid, or Databricks auth is not configured.
        DeploymentError: Databricks refused the request (quota, permission), the deployment failed
            (e.g. its container build), it was not ready within `timeout_s`, or the smoke request failed.
    """
    model = parse_model_uri(spec.model_uri)
    client = client if client is not None else workspace_client()
    api = client.serving_endpoints
    existing = _existing(api, spec.endpoint)
    entity = served_entity(spec, model)
    if existing is None:
        progress(f"Creating serving endpoint {spec.endpoint} for {model.uri} ({spec.workload_size})")
        _call(
            lambda: api.create(name=spec.endpoint, config=_core_config(spec.endpoint, entity)),
            "create",
            spec.endpoint,
        )
    else:
        if _updating(existing):
            progress(f"Serving endpoint {spec.endpoint} is being updated; waiting for that update to end")
            wait_until_ready(api, spec.endpoint, None, timeout_s=timeout_s, poll_s=poll_s, progress=progress)
        progress(f"Updating serving endpoint {spec.endpoint} to {model.uri} ({spec.workload_size})")
        update = lambda: api.update_config(name=spec.endpoint, served_entities=[entity])  # noqa: E731
        _call(update, "update", spec.endpoint)
    logger.info("Serving endpoint %s: deploying %s", spec.endpoint, model.uri)
    ready = wait_until_ready(api, spec.endpoint, model, timeout_s=timeout_s, poll_s=poll_s, progress=progress)
    url = (
        ready.endpoint_url
        or f"{client.config.host.rstrip('/')}/serving-endpoints/{spec.endpoint}/invocations"
    )
    answer = None if smoke_question is None else smoke(client, spec.endpoint, smoke_question)
    return DeployResult(
        endpoint=spec.endpoint, model=model, url=url, created=existing is None, smoke_answer=answer
    )


def _core_config(name: str, entity: Any) -> Any:  # Any: databricks-sdk's config types
    from databricks.sdk.service.serving import EndpointCoreConfigInput

    return EndpointCoreConfigInput(name=name, served_entities=[entity])


def _existing(api: Any, name: str) -> Any:
    """The endpoint, or None when there is none of that name."""
    from databricks.sdk.errors import NotFound

    try:
        return api.get(name=name)
    except NotFound:
        return None
    except Exception as exc:
        raise explain_api_error(exc, "read", name) from None


def _updating(endpoint: Any) -> bool:
    state = getattr(endpoint.state, "config_update", None)
    return getattr(state, "value", state) == "IN_PROGRESS"


def _call(fn: Callable[[], Any], action: str, name: str) -> Any:
    """One control-plane call; a refusal becomes a DeploymentError with the API's own message."""
    try:
        return fn()
    except Exception as exc:
        raise explain_api_error(exc, action, name) from None


def smoke(client: Any, name: str, question: str) -> str:
    """Ask the endpoint one question (a ResponsesAgent request) and return the answer's text.

    Raises:
        DeploymentError: the request failed or the answer has no text.
    """
    body = {"input": [{"role": "user", "content": question}]}
    try:
        reply = client.api_client.do("POST", f"/serving-endpoints/{name}/invocations", body=body)
    except Exception as exc:
        raise DeploymentError(
            f"Serving endpoint {name!r} is ready but its smoke request failed: {_one_line(exc)}"
        ) from None
    text = answer_text(reply)
    if not text:
        raise DeploymentError(
            f"Serving endpoint {name!r} is ready but its smoke request got no answer text: {str(reply)[:200]}"
        )
    return text


def answer_text(reply: Any) -> str:
    """The text of a ResponsesAgent answer (output message items) or a chat completion."""
    if not isinstance(reply, dict):
        return ""
    parts = [
        str(part.get("text") or "")
        for item in reply.get("output") or []
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "output_text"
    ]
    for choice in reply.get("choices") or []:
        parts.append(str(((choice or {}).get("message") or {}).get("content") or ""))
    return "".join(parts).strip()


def _one_line(exc: Exception) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())


__all__ = [
    "SMOKE_QUESTION",
    "DeployResult",
    "DeploySpec",
    "ModelRef",
    "answer_text",
    "deploy",
    "parse_env",
    "parse_model_uri",
    "served_entity",
    "smoke",
    "workspace_client",
]
