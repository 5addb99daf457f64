"""Retrievers built from config by name: `local`, `databricks-vector-search`, `langchain:<module>:<attr>`.

Example:
    >>> from ragworks.config import RetrieverConfig
    >>> retriever = get_retriever(RetrieverConfig(type="local", index="./index", k=3))  # doctest: +SKIP
    >>> retriever.invoke("how do I log an agent?")                                      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.retrievers import BaseRetriever

from ragworks._imports import import_object
from ragworks.config import AgentConfig, RetrieverConfig
from ragworks.errors import ConfigError
from ragworks.retrieval.local import LocalRetriever
from ragworks.retrieval.stages import apply_stages

logger = logging.getLogger(__name__)

__all__ = ["LocalRetriever", "get_retriever", "register_retriever"]

RetrieverFactory = Callable[[RetrieverConfig], BaseRetriever]
_RETRIEVERS: dict[str, RetrieverFactory] = {}


def register_retriever(name: str) -> Callable[[RetrieverFactory], RetrieverFactory]:
    """Register a retriever factory under a config name."""

    def decorator(factory: RetrieverFactory) -> RetrieverFactory:
        _RETRIEVERS[name] = factory
        return factory

    return decorator


@register_retriever("local")
def _local(config: RetrieverConfig) -> BaseRetriever:
    return LocalRetriever.from_path(
        config.index, k=config.k, mode=config.mode, filters=config.filters, **config.options
    )


def _langchain(config: RetrieverConfig) -> BaseRetriever:
    spec = config.type.removeprefix("langchain:")
    target = import_object(spec, what="LangChain retriever", form="langchain:<module>:<attr>")
    retriever = target if isinstance(target, BaseRetriever) else target(**config.options)
    if not isinstance(retriever, BaseRetriever):
        raise ConfigError(f"{spec} gave a {type(retriever).__name__}, not a LangChain BaseRetriever.")
    return retriever


def get_retriever(
    config: RetrieverConfig | AgentConfig | dict[str, Any], *, model: BaseChatModel | None = None
) -> BaseRetriever:
    """Build the retriever a config names, with its query-rewriting and reranking stages.

    `model` writes the query variants and hypothetical answers of `retriever.query` (the agent's
    own chat model, see `ragworks.agents.builder.build_graph`); None: the offline rewriting.
    """
    if isinstance(config, AgentConfig):
        config = config.retriever
    elif isinstance(config, dict):
        config = AgentConfig.load({"retriever": config}).retriever
    return apply_stages(_first_stage(config), config, model=model)


def _first_stage(config: RetrieverConfig) -> BaseRetriever:
    if config.type.startswith("langchain:"):
        return _langchain(config)
    try:
        factory = _RETRIEVERS[config.type]
    except KeyError:
        if config.type == "databricks-vector-search":
            try:  # registers itself on import
                importlib.import_module("ragworks.retrieval.vector_search")
            except ImportError as exc:
                raise ConfigError(
                    "The databricks-vector-search retriever is not available in this install "
                    f"({exc}); use type 'local' or a 'langchain:<module>:<attr>' retriever."
                ) from exc
            return _RETRIEVERS[config.type](config)
        available = ", ".join(sorted([*_RETRIEVERS, "langchain:<module>:<attr>"]))
        raise ConfigError(f"Unknown retriever {config.type!r}. Available: {available}.") from None
    return factory(config)
