"""The agent an entry point runs: built from a config, or loaded from a logged MLflow model.

Example:
    >>> agent = load_agent(config="agent.yaml")                 # doctest: +SKIP
    >>> agent = load_agent(model_uri="models:/rag-agent/1")      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.pyfunc import ResponsesAgent

from ragworks.config import AgentConfig
from ragworks.errors import ConfigError


def load_agent(
    *, config: str | Path | dict[str, Any] | AgentConfig | None = None, model_uri: str | None = None
) -> ResponsesAgent:
    """The agent to run: built from a config (None: the defaults), or loaded from `models:/` or `runs:/`."""
    if config is not None and model_uri is not None:
        raise ConfigError("Give either a config or a model URI, not both.")
    if model_uri is not None:
        return _load_logged(model_uri)
    from ragworks.agents.builder import build_agent

    agent: ResponsesAgent = build_agent(config)
    return agent


def _load_logged(model_uri: str) -> ResponsesAgent:
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise ConfigError(
            f"Could not load the model {model_uri!r}: {exc}. Check the URI (models:/<name>/<version> or "
            "runs:/<run_id>/<path>) and MLFLOW_TRACKING_URI."
        ) from exc
    agent = _raw_model(model)
    if not isinstance(agent, ResponsesAgent):
        raise ConfigError(
            f"The model {model_uri!r} is a {type(agent).__name__}, not a ResponsesAgent; "
            "log it with `ragworks log-model` (or mlflow.pyfunc.log_model of a ResponsesAgent)."
        )
    return agent


def _raw_model(model: Any) -> object:  # Any: a loaded pyfunc model of any flavor
    """The Python object behind a loaded pyfunc model (`get_raw_model` for ResponsesAgents)."""
    try:
        return model.get_raw_model()
    except NotImplementedError:
        try:
            return model.unwrap_python_model()
        except Exception:  # not a Python model at all (e.g. a flavor such as sklearn)
            return model
