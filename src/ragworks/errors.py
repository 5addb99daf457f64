"""The single exception hierarchy of ragworks.

RagworksError            root: the CLI and the server catch only this
 ├── ConfigError         the caller must change the config, an argument or the environment
 ├── RetrievalError      a retriever backend failed; carries the backend name
 ├── IndexFormatError    an index folder is missing, old or foreign (a ConfigError)
 ├── ModelError          a chat or embedding model call failed
 ├── ToolError           a tool failed; the message is shown to the model
 ├── DeploymentError     a Model Serving deployment failed (the endpoint's own message)
 └── EvalError           an evaluation suite or judge failed
"""

from __future__ import annotations


class RagworksError(Exception):
    """Root of every error ragworks raises on purpose."""


class ConfigError(RagworksError):
    """The caller must change the config, an argument or the environment."""


class IndexFormatError(ConfigError):
    """An index folder is missing, written by another version, or not a ragworks index."""


class RetrievalError(RagworksError):
    """A retriever backend failed."""

    def __init__(self, message: str, *, backend: str = "unknown") -> None:
        super().__init__(message)
        self.backend = backend


class ModelError(RagworksError):
    """A chat or embedding model call failed; `status` and `retry_after` say how the server should answer."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status for the client: 502 (the model failed; also when None), 503 (it is overloaded
        or rate limited), 504 (it timed out)."""
        self.retry_after = retry_after
        """Seconds the model asked callers to wait (its Retry-After header), when it said."""


class ToolError(RagworksError):
    """A tool failed; the message is shown to the model, so it says how to retry."""


class EvalError(RagworksError):
    """An evaluation suite, scorer or judge failed."""


class DeploymentError(RagworksError):
    """A Model Serving endpoint could not be created, updated, made ready or queried."""


__all__ = [
    "ConfigError",
    "DeploymentError",
    "EvalError",
    "IndexFormatError",
    "ModelError",
    "RagworksError",
    "RetrievalError",
    "ToolError",
]
