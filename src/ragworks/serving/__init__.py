"""Serving: one chat endpoint for the openai client, MLflow clients (AgentServer's contract) and a browser.

Example:
    >>> from ragworks.agents import build_agent
    >>> from ragworks.serving import build_app
    >>> app = build_app(build_agent("agent.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragworks._imports import lazy_attributes

# Loaded on first use: the app imports MLflow and FastAPI, which `ragworks --help` must not pay for.
_LAZY = {
    "ServeSpec": "ragworks.serving.app",
    "ServingLimits": "ragworks.serving.limits",
    "build_app": "ragworks.serving.app",
    "create_app": "ragworks.serving.app",
    "load_agent": "ragworks.agents.loading",
    "run_server": "ragworks.serving.server",
    "serve_in_thread": "ragworks.serving.server",
}

if TYPE_CHECKING:
    from ragworks.agents.loading import load_agent
    from ragworks.serving.app import ServeSpec, build_app, create_app
    from ragworks.serving.limits import ServingLimits
    from ragworks.serving.server import run_server, serve_in_thread


__getattr__ = lazy_attributes("ragworks.serving", _LAZY)


__all__ = [
    "ServeSpec",
    "ServingLimits",
    "build_app",
    "create_app",
    "load_agent",
    "run_server",
    "serve_in_thread",
]
