"""Serving: a chat endpoint on MLflow's AgentServer for the openai client, MLflow clients and a browser.

Example:
    >>> from ragworks.agents import build_agent
    >>> from ragworks.serving import build_app
    >>> app = build_app(build_agent("agent.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from ragworks.serving.app import ServeSpec, build_app, create_app, load_agent
from ragworks.serving.limits import ServingLimits
from ragworks.serving.server import run_server, serve_in_thread

__all__ = [
    "ServeSpec",
    "ServingLimits",
    "build_app",
    "create_app",
    "load_agent",
    "run_server",
    "serve_in_thread",
]
