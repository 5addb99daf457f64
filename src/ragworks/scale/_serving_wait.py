"""Waiting for a Model Serving endpoint to serve a model, and explaining what Databricks refused.

The endpoint is ready when its config update is NOT_UPDATING, it is READY, and its active config
serves the expected model version. UPDATE_FAILED / UPDATE_CANCELED, or a served entity in
DEPLOYMENT_FAILED / DEPLOYMENT_ABORTED, ends the wait with the entity's own state message (a failed
container build says why). Progress lines go to `progress` whenever the state changes, and every
minute while it does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ragworks.errors import DeploymentError

Progress = Callable[[str], None]
_FAILED_UPDATES = ("UPDATE_FAILED", "UPDATE_CANCELED")
_FAILED_ENTITIES = ("DEPLOYMENT_FAILED", "DEPLOYMENT_ABORTED")
_HEARTBEAT_S = 60.0
_MISMATCH_POLLS = 3


def wait_until_ready(
    api: Any,  # Any: databricks-sdk's ServingEndpointsAPI
    name: str,
    model: Any,  # Any: deploy.ModelRef | None (None: wait only for the update in progress to end)
    *,
    timeout_s: float,
    poll_s: float,
    progress: Progress,
) -> Any:  # Any: databricks-sdk's ServingEndpointDetailed
    """Poll `api.get(name)` until the endpoint serves `model` (or no update is in progress).

    Raises:
        DeploymentError: the deployment failed, or it was not done within `timeout_s`.
    """
    start, last, said_at, mismatches = time.monotonic(), "", 0.0, 0
    while True:
        try:
            endpoint = api.get(name=name)
        except Exception as exc:
            raise explain_api_error(exc, "read", name) from None
        elapsed = time.monotonic() - start
        line = describe_state(endpoint)
        if line != last or elapsed - said_at >= _HEARTBEAT_S:
            progress(f"  {elapsed:5.0f}s  {name}: {line}")
            last, said_at = line, elapsed
        done = _done(endpoint, name, model)
        if done is True:
            return endpoint
        # Right after an update the old config may still be described as current for a poll or two.
        mismatches = mismatches + 1 if done is None else 0
        if mismatches >= _MISMATCH_POLLS:
            raise DeploymentError(
                f"Serving endpoint {name!r} is ready but serves {_served(endpoint)}, not {model.uri}: "
                "another update replaced this one. Run ragworks deploy again."
            )
        if elapsed >= timeout_s:
            raise DeploymentError(
                f"Serving endpoint {name!r} was not ready after {timeout_s:.0f}s (last state: {line}); it "
                f"keeps deploying: `databricks serving-endpoints get {name}` shows its state, or pass a "
                "larger --timeout."
            )
        time.sleep(poll_s)


def _value(x: Any) -> str:
    """An SDK enum's value (or a plain string)."""
    return str(getattr(x, "value", x) or "")


def _entities(config: Any) -> list[Any]:
    return list(getattr(config, "served_entities", None) or []) if config is not None else []


def _served(endpoint: Any) -> str:
    served = [f"{e.entity_name} version {e.entity_version}" for e in _entities(endpoint.config)]
    return ", ".join(served) or "nothing"


def _done(endpoint: Any, name: str, model: Any) -> bool | None:
    """True once the endpoint serves `model`, None when it is ready with another model, else False;
    a DeploymentError once the deployment has failed."""
    state = endpoint.state
    update, ready = _value(getattr(state, "config_update", None)), _value(getattr(state, "ready", None))
    failed = [
        e
        for e in _entities(endpoint.pending_config) + _entities(endpoint.config)
        if e.state is not None and _value(e.state.deployment) in _FAILED_ENTITIES
    ]
    if update in _FAILED_UPDATES or (failed and update != "IN_PROGRESS"):
        raise DeploymentError(failure_message(endpoint, name, failed))
    if update != "NOT_UPDATING":
        return False
    if model is None:
        return True
    if ready != "READY":
        return False
    served = [(e.entity_name, str(e.entity_version)) for e in _entities(endpoint.config)]
    return True if (model.name, model.version) in served else None


def failure_message(endpoint: Any, name: str, failed: list[Any]) -> str:
    """One line: which served entity failed and its own message, and where its build logs are."""
    update = _value(getattr(endpoint.state, "config_update", None)) or "UPDATE_FAILED"
    if not failed:
        return f"Serving endpoint {name!r} failed to deploy ({update}); see the endpoint's events."
    entity = failed[0]
    message = " ".join(str(entity.state.deployment_state_message or "no message").split())
    served = entity.name or f"{entity.entity_name}-{entity.entity_version}"
    return (
        f"Serving endpoint {name!r} failed to deploy {entity.entity_name} version {entity.entity_version} "
        f"({_value(entity.state.deployment)}): {message} "
        f"(build logs: databricks serving-endpoints build-logs {name} {served})"
    )


def describe_state(endpoint: Any) -> str:
    """The state in a few words: ready, update, and the pending entities' deployment states."""
    state = endpoint.state
    words = [_value(getattr(state, "ready", None)) or "?", f"update {_value(state.config_update) or '?'}"]
    for entity in _entities(endpoint.pending_config):
        if entity.state is not None:
            message = " ".join(str(entity.state.deployment_state_message or "").split())
            words.append(
                f"{entity.name}: {_value(entity.state.deployment)}" + (f" ({message})" if message else "")
            )
    return ", ".join(words)


def explain_api_error(exc: Exception, action: str, name: str) -> DeploymentError:
    """One line for a refused call: the API's error code and message, and what to do about a 403."""
    code = getattr(exc, "error_code", None) or type(exc).__name__
    message = " ".join((str(exc) or type(exc).__name__).split())
    hint = ""
    if type(exc).__name__ in ("PermissionDenied", "Unauthenticated") or code in (
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    ):
        hint = (
            " Ask a workspace admin for CAN_MANAGE on the endpoint (or the right to create endpoints), "
            "or check DATABRICKS_TOKEN."
        )
    return DeploymentError(
        f"Databricks refused to {action} serving endpoint {name!r} ({code}): {message}.{hint}"
    )
