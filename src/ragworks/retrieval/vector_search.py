"""Databricks Vector Search as a ragworks retriever, through the official client (`databricks-vectorsearch`).

    retriever:
      type: databricks-vector-search
      index: main.docs.chunks_index     # the Unity Catalog name of the index
      endpoint: docs-endpoint           # optional: the index's Vector Search endpoint
      k: 5
      mode: hybrid                      # hybrid -> HYBRID, dense -> ANN, bm25 -> FULL_TEXT
      filters: {source: [a.md, b.md]}   # the same filter dicts as the local index
      options: {text_column: text, source_column: source, columns: [title], score_threshold: 0.5}

An index of precomputed vectors (`embedding_vector_columns`) needs `options.embeddings`: the ragworks
embedder that made them (`minilm`, `hashing`), which embeds each query here and sends `query_vector`
(with the text too for `hybrid`). `options.embedding_endpoint` names the serving endpoint that embeds
queries; a query does not need it, but a logged agent declares it as a resource so Model Serving grants
access to it.

The workspace and credentials come from databricks-sdk's unified auth (`DATABRICKS_HOST` with
`DATABRICKS_TOKEN`, or a service principal's `DATABRICKS_CLIENT_ID`/`DATABRICKS_CLIENT_SECRET`, or a
profile), never from the config file. The index is looked up once, on the first query: its primary
key becomes each document's `id`, its embedding source column the text. Each result row becomes a
LangChain `Document` with `metadata["source"]` and `metadata["score"]`, like the local index's.

`IndexHandle` is the one way ragworks calls the client (the retriever and `vector_search_ingest`):
it opens the index again when an expiring login's token may have run out, and turns every failure
into a `RetrievalError` (or a `ConfigError` when the index name, columns or credentials are wrong)
whose message says what to fix and never carries the token. The client retries queries that get
429/503/504 itself.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import methodcaller
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from ragworks.config import RetrieverConfig, SearchMode
from ragworks.embeddings import get_embedder
from ragworks.errors import ConfigError, RetrievalError
from ragworks.retrieval.registry import register_retriever

BACKEND = "databricks-vector-search"
QUERY_TYPES: dict[SearchMode, str] = {"hybrid": "HYBRID", "dense": "ANN", "bm25": "FULL_TEXT"}
Action = Literal["open", "describe", "query", "scan", "upsert", "delete"]
SOURCE_COLUMNS = ("source", "doc_uri", "url", "path")
"""Columns taken as a row's source, in this order, when the config names none and the index has one
(else the primary key is the source)."""
TOKEN_TTL_S = 30 * 60
"""How long a token from an expiring login (not a PAT or service principal) is used before reopening."""
RETRY_STATUSES = frozenset({429, 503, 504})
BACKOFF_S = 0.5


class VectorSearchRetriever(BaseRetriever):
    """A LangChain retriever over one Databricks Vector Search index."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index_name: str
    endpoint: str | None = None
    k: int = 5
    mode: SearchMode = "hybrid"
    filters: dict[str, Any] | None = None
    text_column: str | None = None
    """The column holding the chunk text; default: the index's embedding source column."""
    source_column: str | None = None
    """The column giving `metadata["source"]`; default: the first of `SOURCE_COLUMNS` the index has."""
    columns: list[str] = Field(default_factory=list)
    """More columns to return, as metadata."""
    score_threshold: float | None = None
    """Drop results scoring below this (Vector Search's own scale for the query type)."""
    embeddings: str | None = None
    """For an index of precomputed vectors: the ragworks embedder that made them (`minilm`, `hashing`);
    queries then carry `query_vector`, embedded here."""
    workspace_url: str | None = None
    """Default: databricks-sdk's host."""
    rerank: bool = False
    """Have the index rerank its results with the Databricks reranker (`retriever.reranker: databricks`)."""
    columns_to_rerank: list[str] = Field(default_factory=list)
    """The columns the Databricks reranker reads; default: the text column."""
    tags: list[str] | None = Field(default_factory=lambda: ["ragworks", BACKEND])

    _handle: Any = PrivateAttr(default=None)  # IndexHandle, after the first query
    _layout: Any = PrivateAttr(default=None)  # _Layout, once the index is described
    _embedder: Any = PrivateAttr(default=None)  # Embedder, with `embeddings`
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Document]:
        handle, layout = self._setup()
        text: dict[str, Any] = {"query_text": query}
        if self._embedder is not None and self.mode != "bm25":
            vector = {"query_vector": [float(x) for x in self._embedder.encode([query])[0]]}
            text = {**text, **vector} if self.mode == "hybrid" else vector  # ANN: the vector alone
        search = methodcaller(
            "similarity_search",
            columns=layout.columns,
            filters={**(self.filters or {}), **(filters or {})} or None,
            num_results=k or self.k,
            query_type=QUERY_TYPES[self.mode],
            score_threshold=self.score_threshold,
            disable_notice=True,
            **text,
            **(self._reranker_arguments(layout) if self.rerank else {}),
        )
        response = handle.call("query", search)
        docs = layout.documents(response)
        return _reranked(docs, response, self.index_name) if self.rerank else docs

    def _reranker_arguments(self, layout: _Layout) -> dict[str, Any]:
        try:
            from databricks.ai_search.reranker import DatabricksReranker
        except ImportError:
            try:
                from databricks.vector_search.reranker import DatabricksReranker
            except ImportError:
                raise ConfigError(
                    "retriever.reranker 'databricks' needs a databricks-vectorsearch client with "
                    "rerankers (databricks.vector_search.reranker): pip install -U databricks-vectorsearch."
                ) from None
        columns = self.columns_to_rerank or [layout.text]
        # debug_level 1 makes the service report reranker_time: the one sign that it reranked
        return {"reranker": DatabricksReranker(columns_to_rerank=columns), "debug_level": 1}

    def _setup(self) -> tuple[IndexHandle, _Layout]:
        """The index handle and the result layout, made on the first query (thread-safe)."""
        with self._lock:
            if self._handle is None or self._layout is None:
                handle = IndexHandle(
                    self.index_name, endpoint=self.endpoint, workspace_url=self.workspace_url
                )
                layout = _Layout.of(handle.spec(), self)
                self._embedder = get_embedder(self.embeddings) if self.embeddings else None
                self._handle, self._layout = handle, layout
            return self._handle, self._layout


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexSpec:
    """What ragworks needs to know of an index, from its description."""

    primary_key: str
    direct_access: bool
    source_columns: list[str]
    """Columns the index embeds itself (managed embeddings)."""
    vector_column: str | None
    """The column of precomputed vectors, for an index without managed embeddings."""
    vector_dimension: int
    columns: set[str]
    """Column names: a Direct Access index's `schema_json`, a Delta Sync index's `columns_to_sync`
    (empty when it syncs every column of its table)."""

    @classmethod
    def parse(cls, description: dict[str, Any], index_name: str) -> IndexSpec:
        """The spec of a described index; a ConfigError when it reports no primary key."""
        primary_key = description.get("primary_key")
        if not primary_key:
            raise ConfigError(f"Vector Search index {index_name!r} reports no primary key.")
        direct = "direct_access_index_spec" in description
        spec = description.get("direct_access_index_spec") or description.get("delta_sync_index_spec") or {}
        sources = [c["name"] for c in spec.get("embedding_source_columns") or [] if c.get("name")]
        vectors = [c for c in spec.get("embedding_vector_columns") or [] if c.get("name")]
        try:
            columns = set(json.loads(spec.get("schema_json") or "{}"))
        except (TypeError, ValueError):
            columns = set()
        return cls(
            primary_key=str(primary_key),
            direct_access=direct and description.get("index_type", "DIRECT_ACCESS") == "DIRECT_ACCESS",
            source_columns=sources,
            vector_column=vectors[0]["name"] if vectors and not sources else None,
            vector_dimension=int(vectors[0].get("embedding_dimension") or 0) if vectors else 0,
            columns=columns | {str(c) for c in spec.get("columns_to_sync") or []},
        )


class IndexHandle:
    """The official client's object for one index: opened on first use, opened again when its
    login's token may have run out (`TOKEN_TTL_S`, or a 401), and every failure explained."""

    def __init__(
        self,
        index_name: str,
        *,
        endpoint: str | None = None,
        workspace_url: str | None = None,
        setting: str = "retriever.index",
    ) -> None:
        self.index_name, self.endpoint, self.workspace_url = index_name, endpoint, workspace_url
        self.setting = setting
        """The setting that names the index, for error messages (`retriever.index`, `--vector-search`)."""
        self._lock = threading.Lock()
        self._index: Any = None
        self._valid_until = 0.0

    def spec(self) -> IndexSpec:
        """The index's spec (one describe call)."""
        return IndexSpec.parse(self.call("describe", methodcaller("describe")), self.index_name)

    def call(self, action: Action, fn: Callable[[Any], Any], *, retries: int = 0) -> Any:
        """`fn(index)`: after a 401 from an expiring login, once more with fresh credentials; after
        429/503/504, up to `retries` more times with backoff; any other failure explained."""
        refreshed, attempt = False, 0
        while True:
            index = self._current(force=False)
            try:
                return fn(index)
            except Exception as exc:
                status = status_of(exc)
                if status == 401 and not refreshed and self._expiring():
                    refreshed = True
                    self._current(force=True)
                    continue
                if attempt < retries and status in RETRY_STATUSES:
                    time.sleep(BACKOFF_S * 2**attempt)
                    attempt += 1
                    continue
                raise explain_failure(exc, self.index_name, action=action, setting=self.setting) from exc

    def _expiring(self) -> bool:
        return self._valid_until != float("inf")

    def _current(self, *, force: bool) -> Any:
        """The index object, (re)opened when forced, never opened, or past its token's lifetime."""
        with self._lock:
            if force or self._index is None or time.monotonic() > self._valid_until:
                credentials, static = _credentials(self.workspace_url)
                client = _client_class()(**credentials, disable_notice=True)
                try:
                    index = client.get_index(endpoint_name=self.endpoint, index_name=self.index_name)
                except Exception as exc:
                    raise explain_failure(exc, self.index_name, action="open", setting=self.setting) from exc
                self._index = index
                self._valid_until = float("inf") if static else time.monotonic() + TOKEN_TTL_S
            return self._index


class _Layout:
    """Which columns a query asks for, and how a result row becomes a Document."""

    def __init__(self, *, primary_key: str, text: str, source: str | None, extra: list[str]) -> None:
        self.primary_key, self.text, self.source = primary_key, text, source
        wanted = [primary_key, text, *([source] if source else []), *extra]
        self.columns = list(dict.fromkeys(wanted))

    @classmethod
    def of(cls, spec: IndexSpec, retriever: VectorSearchRetriever) -> _Layout:
        """The layout for an index, from its spec and the retriever's options."""
        if spec.vector_column and not retriever.embeddings:
            raise ConfigError(
                f"Vector Search index {retriever.index_name!r} holds precomputed vectors "
                f"({spec.vector_column!r}), so queries need a vector: set retriever.options.embeddings to "
                "the embedder that made them (minilm or hashing) and retriever.options.text_column to the "
                "text column."
            )
        text = retriever.text_column or (spec.source_columns[0] if spec.source_columns else None)
        if text is None:
            raise ConfigError(
                f"Vector Search index {retriever.index_name!r} embeds precomputed vectors, so ragworks "
                "cannot tell which column holds the text: set retriever.options.text_column."
            )
        source = retriever.source_column or next((c for c in SOURCE_COLUMNS if c in spec.columns), None)
        return cls(primary_key=spec.primary_key, text=text, source=source, extra=list(retriever.columns))

    def documents(self, response: dict[str, Any]) -> list[Document]:
        """Result rows as Documents, best first, each with `source` and `score` metadata."""
        names = [c["name"] for c in response.get("manifest", {}).get("columns", [])]
        docs = []
        for row in response.get("result", {}).get("data_array") or []:
            values = dict(zip(names, row, strict=False))  # a short row leaves columns out
            key = str(values.pop(self.primary_key))
            text = values.pop(self.text, None)
            metadata = {k: v for k, v in values.items() if v is not None}
            metadata["source"] = str(metadata.get(self.source, key)) if self.source else key
            metadata["score"] = float(values.get("score") or 0.0)
            docs.append(Document(id=key, page_content="" if text is None else str(text), metadata=metadata))
        return docs


def _reranked(docs: list[Document], response: dict[str, Any], index_name: str) -> list[Document]:
    """The documents of a reranked query, or a RetrievalError when the service did not say it reranked."""
    if (response.get("debug_info") or {}).get("reranker_time") is None:
        raise RetrievalError(
            f"Vector Search did not rerank the results of {index_name!r} (no reranker_time in its debug "
            "info): the index or endpoint may not support the Databricks reranker. Set "
            "retriever.reranker to none, minilm or cross-encoder:<path>.",
            backend=BACKEND,
        )
    for doc in docs:
        doc.metadata["reranker"] = "databricks"
    return docs


def _client_class() -> Any:
    """The official client's class: `databricks.ai_search` (new name), else `databricks.vector_search`."""
    try:
        from databricks.ai_search.client import AISearchClient

        return AISearchClient
    except ImportError:
        pass
    try:
        from databricks.vector_search.client import VectorSearchClient

        return VectorSearchClient
    except ImportError:
        raise ConfigError(
            "The databricks-vector-search retriever needs the official client: "
            "pip install 'ragworks[databricks]'"
        ) from None


def _credentials(workspace_url: str | None) -> tuple[dict[str, Any], bool]:
    """Client keyword arguments from databricks-sdk's unified auth, and whether they stay valid.

    A PAT or a service principal (whose tokens the client mints and refreshes itself) stays valid;
    any other login (OAuth user, Azure, CLI, Model Serving) yields a token that expires, so the
    index is opened again before that (`TOKEN_TTL_S`).
    """
    try:
        from databricks.sdk.core import Config
    except ImportError:
        raise ConfigError(
            "The databricks-vector-search retriever needs databricks-sdk: pip install 'ragworks[databricks]'"
        ) from None
    try:
        config = Config(host=workspace_url) if workspace_url else Config()
        host = (config.host or "").rstrip("/")
        if config.client_id and config.client_secret:
            credentials = {
                "workspace_url": host,
                "service_principal_client_id": config.client_id,
                "service_principal_client_secret": config.client_secret,
            }
            return credentials, True
        token = config.authenticate().get("Authorization", "").removeprefix("Bearer ")
        static = config.auth_type == "pat"
    except Exception as exc:  # the SDK's errors carry its own advice, never the secret
        raise ConfigError(
            f"Databricks authentication is not configured for {BACKEND} ({exc}); set DATABRICKS_HOST and "
            "DATABRICKS_TOKEN, or a service principal's DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET."
        ) from None
    if not host or not token:
        raise ConfigError(
            f"{BACKEND} needs a Databricks workspace and token: set DATABRICKS_HOST and DATABRICKS_TOKEN."
        )
    return {"workspace_url": host, "personal_access_token": token}, static


def explain_failure(
    exc: Exception, index_name: str, *, action: Action, setting: str = "retriever.index"
) -> Exception:
    """A ragworks error for a client failure: what went wrong and what to change (`setting` names it)."""
    status = status_of(exc)
    detail = str(exc).strip() or type(exc).__name__
    endpoint = "retriever.endpoint" if setting == "retriever.index" else "--endpoint"
    if status == 404:
        return ConfigError(
            f"Vector Search index {index_name!r} was not found ({detail}). Check {setting} "
            f"(catalog.schema.index), {endpoint} and DATABRICKS_HOST."
        )
    if status in (401, 403):
        return ConfigError(
            f"Databricks refused access to Vector Search index {index_name!r} (HTTP {status}: {detail}). "
            "Check DATABRICKS_TOKEN, or the service principal's permissions on the index."
        )
    if status == 400:
        what = {
            "query": "the retriever's columns, filters and mode against the index's schema",
            "upsert": "the columns and vector size against the index's schema",
            "delete": "the primary keys",
        }.get(action, f"{setting} and {endpoint}")
        return ConfigError(f"Vector Search rejected the {action} on {index_name!r}: {detail}. Check {what}.")
    return RetrievalError(f"Vector Search {action} failed for {index_name!r}: {detail}", backend=BACKEND)


def status_of(exc: Exception) -> int | None:
    """The HTTP status of a client error: its `status_code`, or (older clients) from its message."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    match = re.search(r"status_code (\d{3})", str(exc))
    return int(match.group(1)) if match else None


@register_retriever(BACKEND)
def _vector_search(config: RetrieverConfig) -> BaseRetriever:
    options = dict(config.options)
    # embedding_endpoint only declares a resource for Model Serving (agents/logged_model.py)
    known = {
        "text_column",
        "source_column",
        "columns",
        "score_threshold",
        "embeddings",
        "workspace_url",
        "embedding_endpoint",
        "columns_to_rerank",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"Unknown {BACKEND} option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}."
        )
    return VectorSearchRetriever(
        index_name=config.index,
        endpoint=config.endpoint,
        k=config.k,
        mode=config.mode,
        filters=config.filters,
        rerank=config.reranker == "databricks",
        **{k: v for k, v in options.items() if k != "embedding_endpoint"},
    )
