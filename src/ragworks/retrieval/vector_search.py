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

The client retries queries that get 429/503/504 itself; any other failure becomes a `RetrievalError` (or a
`ConfigError` when the index name, columns or credentials are wrong) whose message says what to fix
and never carries the token.
"""

from __future__ import annotations

import json
import re
import threading
import time
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
    tags: list[str] | None = Field(default_factory=lambda: ["ragworks", BACKEND])

    _index: Any = PrivateAttr(default=None)  # Any: the client's index object
    _layout: Any = PrivateAttr(default=None)  # _Layout, once the index is described
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _embedder: Any = PrivateAttr(default=None)  # Embedder, with `embeddings`
    _valid_until: float = PrivateAttr(default=0.0)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Document]:
        merged = {**(self.filters or {}), **(filters or {})} or None
        for attempt in (1, 2):
            index, layout = self._open()
            text: dict[str, Any] = {"query_text": query}
            if self._embedder is not None and self.mode != "bm25":
                vector = {"query_vector": [float(x) for x in self._embedder.encode([query])[0]]}
                text = {**text, **vector} if self.mode == "hybrid" else vector  # ANN: the vector alone
            try:
                response = index.similarity_search(
                    columns=layout.columns,
                    filters=merged,
                    num_results=k or self.k,
                    query_type=QUERY_TYPES[self.mode],
                    score_threshold=self.score_threshold,
                    disable_notice=True,
                    **text,
                )
            except Exception as exc:
                if attempt == 1 and status_of(exc) == 401 and self._expires():
                    continue  # the login's token ran out early: open the index again with a fresh one
                raise explain_failure(exc, self.index_name, action="query") from exc
            return layout.documents(response)
        raise AssertionError("unreachable")

    def _expires(self) -> bool:
        """Whether the token came from an expiring login; if so, the next `_open` gets a fresh one."""
        with self._lock:
            if self._valid_until == float("inf"):
                return False
            self._valid_until = 0.0
            return True

    def _open(self) -> tuple[Any, _Layout]:
        """The client's index object and the result layout: looked up once, again before a token expires."""
        with self._lock:
            if self._index is None or self._layout is None or time.monotonic() > self._valid_until:
                index, valid_until = open_index(self.workspace_url, self.endpoint, self.index_name)
                try:
                    description = index.describe()
                except Exception as exc:
                    raise explain_failure(exc, self.index_name, action="describe") from exc
                layout = _Layout.of(description, self)
                embedder = get_embedder(self.embeddings) if self.embeddings else None
                # Only a complete reopen replaces the old state (and its deadline).
                self._index, self._layout, self._embedder = index, layout, embedder
                self._valid_until = valid_until
            return self._index, self._layout


class _Layout:
    """Which columns a query asks for, and how a result row becomes a Document."""

    def __init__(self, *, primary_key: str, text: str, source: str | None, extra: list[str]) -> None:
        self.primary_key, self.text, self.source = primary_key, text, source
        wanted = [primary_key, text, *([source] if source else []), *extra]
        self.columns = list(dict.fromkeys(wanted))

    @classmethod
    def of(cls, description: dict[str, Any], retriever: VectorSearchRetriever) -> _Layout:
        """The layout for an index, from its description and the retriever's options."""
        primary_key = description.get("primary_key")
        if not primary_key:
            raise ConfigError(f"Vector Search index {retriever.index_name!r} reports no primary key.")
        spec = description.get("delta_sync_index_spec") or description.get("direct_access_index_spec") or {}
        embedded = [c.get("name") for c in spec.get("embedding_source_columns") or [] if c.get("name")]
        vectors = [c.get("name") for c in spec.get("embedding_vector_columns") or [] if c.get("name")]
        if vectors and not embedded and not retriever.embeddings:
            raise ConfigError(
                f"Vector Search index {retriever.index_name!r} holds precomputed vectors "
                f"({vectors[0]!r}), so queries need a vector: set retriever.options.embeddings to the "
                "embedder that made them (minilm or hashing) and retriever.options.text_column to the "
                "text column."
            )
        text = retriever.text_column or (embedded[0] if embedded else None)
        if text is None:
            raise ConfigError(
                f"Vector Search index {retriever.index_name!r} embeds precomputed vectors, so ragworks "
                "cannot tell which column holds the text: set retriever.options.text_column."
            )
        schema = _schema(spec)
        source = retriever.source_column or next((c for c in SOURCE_COLUMNS if c in schema), None)
        return cls(primary_key=primary_key, text=text, source=source, extra=list(retriever.columns))

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


def _schema(spec: dict[str, Any]) -> set[str]:
    """Column names: a Direct Access index's `schema_json`, a Delta Sync index's `columns_to_sync`.

    Empty when a Delta Sync index syncs every column of its table (then name `source_column`).
    """
    try:
        columns = set(json.loads(spec.get("schema_json") or "{}"))
    except (TypeError, ValueError):
        columns = set()
    return columns | {str(c) for c in spec.get("columns_to_sync") or []}


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


def open_index(
    workspace_url: str | None, endpoint: str | None, index_name: str, *, setting: str = "retriever.index"
) -> tuple[Any, float]:
    """The client's index object (one GET of the index) and until when (monotonic) its token is valid."""
    credentials, static = _credentials(workspace_url)
    client = _client_class()(**credentials, disable_notice=True)
    try:
        index = client.get_index(endpoint_name=endpoint, index_name=index_name)
    except Exception as exc:
        raise explain_failure(exc, index_name, action="open", setting=setting) from exc
    return index, (float("inf") if static else time.monotonic() + TOKEN_TTL_S)


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
        **{k: v for k, v in options.items() if k != "embedding_endpoint"},
    )
