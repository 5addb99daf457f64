"""The optional stages around a retriever a config builds: query rewriting, then reranking.

    base retriever -> RewritingRetriever (retriever.query) -> RerankingRetriever (retriever.reranker)

Example:
    >>> from ragworks.config import RetrieverConfig
    >>> cfg = RetrieverConfig(reranker="minilm", rerank_candidates=30)
    >>> apply_stages(base, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect

from langchain_core.language_models import BaseChatModel
from langchain_core.retrievers import BaseRetriever

from ragworks.config import RetrieverConfig
from ragworks.errors import ConfigError
from ragworks.retrieval.rerank import RerankingRetriever, get_reranker
from ragworks.retrieval.rewrite import RewritingRetriever


def apply_stages(
    retriever: BaseRetriever, config: RetrieverConfig, *, model: BaseChatModel | None = None
) -> BaseRetriever:
    """Wrap `retriever` in the rewriting and reranking stages the config asks for (none by default).

    Args:
        retriever: the first-stage retriever.
        config: its config (`query`, `reranker`, `rerank_candidates`, `k`).
        model: writes the query variants or hypothetical answers; None: the offline rewriting.

    Raises:
        ConfigError: a stage the retriever cannot take (it cannot widen its result count, or the
            `databricks` reranker on another backend), or a reranker whose model is not on disk.
    """
    if config.reranker == "databricks" and config.type != "databricks-vector-search":
        raise ConfigError(
            "retriever.reranker 'databricks' is the Vector Search reranker: it needs type "
            "'databricks-vector-search'. Use 'minilm' or 'cross-encoder:<path>' with other retrievers."
        )
    reranker = get_reranker(config.reranker)
    if config.query == "plain" and reranker is None:
        return retriever
    if not _takes_k(retriever):
        raise ConfigError(
            f"retriever.query / retriever.reranker need a retriever that accepts k per call; "
            f"{type(retriever).__name__} does not. Set them to plain / none."
        )
    tags = retriever.tags
    if config.query != "plain":
        retriever = RewritingRetriever(
            base=retriever, mode=config.query, k=config.k, model=model, tags=tags
        )
    if reranker is not None:
        retriever = RerankingRetriever(
            base=retriever, reranker=reranker, k=config.k, candidates=config.rerank_candidates, tags=tags
        )
    return retriever


def _takes_k(retriever: BaseRetriever) -> bool:
    params = inspect.signature(retriever._get_relevant_documents).parameters.values()
    return any(p.name == "k" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
