"""ragworks: build, serve and evaluate retrieval-augmented agents on MLflow.

Example:
    >>> import ragworks
    >>> report = ragworks.ingest(["docs/"], "./index")                 # doctest: +SKIP
    >>> ragworks.LocalIndex.load("./index").search("what is ragworks?")  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ragworks._imports import lazy_attributes
from ragworks.config import AgentConfig, RetrieverConfig, Settings
from ragworks.errors import (
    ConfigError,
    EvalError,
    IndexFormatError,
    ModelError,
    RagworksError,
    RetrievalError,
    ToolError,
)

try:
    __version__ = version("ragworks")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

# Heavy parts (numpy, bm25s, mlflow, langgraph) load on first use so `ragworks --help` stays fast.
_LAZY = {
    "Chunk": "ragworks.retrieval.local",
    "OfflineChatModel": "ragworks.agents.offline",
    "RagChatModel": "ragworks.agents.chat_model",
    "RagResponsesAgent": "ragworks.agents.responses_agent",
    "build_agent": "ragworks.agents.builder",
    "log_agent": "ragworks.agents.logged_model",
    "get_chat_model": "ragworks.models",
    "IngestReport": "ragworks.retrieval.ingest",
    "LocalIndex": "ragworks.retrieval.local",
    "LocalRetriever": "ragworks.retrieval.registry",
    "get_retriever": "ragworks.retrieval.registry",
    "ingest": "ragworks.retrieval.ingest",
}

if TYPE_CHECKING:
    from ragworks.agents.builder import build_agent
    from ragworks.agents.chat_model import RagChatModel
    from ragworks.agents.logged_model import log_agent
    from ragworks.agents.offline import OfflineChatModel
    from ragworks.agents.responses_agent import RagResponsesAgent
    from ragworks.models import get_chat_model
    from ragworks.retrieval.ingest import IngestReport, ingest
    from ragworks.retrieval.local import Chunk, LocalIndex
    from ragworks.retrieval.registry import LocalRetriever, get_retriever


__getattr__ = lazy_attributes("ragworks", _LAZY)


__all__ = [
    "AgentConfig",
    "Chunk",
    "ConfigError",
    "EvalError",
    "IndexFormatError",
    "IngestReport",
    "LocalIndex",
    "LocalRetriever",
    "ModelError",
    "OfflineChatModel",
    "RagChatModel",
    "RagResponsesAgent",
    "RagworksError",
    "RetrievalError",
    "RetrieverConfig",
    "Settings",
    "ToolError",
    "__version__",
    "build_agent",
    "get_chat_model",
    "get_retriever",
    "ingest",
    "log_agent",
]
