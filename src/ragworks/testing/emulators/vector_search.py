"""A local emulator of the Databricks Vector Search REST API, over `LocalIndex`es, on 127.0.0.1.

It speaks enough of the API for the official `databricks-vectorsearch` client (and databricks-sdk's
host-metadata probe): describe an endpoint and an index, query (`query_text` and/or `query_vector`,
`columns`, `num_results`, `filters_json`, `score_threshold`, `query_type` ANN / HYBRID / FULL_TEXT),
scan, upsert and delete rows, and create a Delta Sync index (`POST .../endpoints/{ep}/indexes`)
over a table named in `tables` (it serves that LocalIndex's rows; an unknown table is refused).
Each given index is a Direct Access index with primary key `id`, text column `text`
and one column per metadata key of its chunks. By default `text` is its embedding source (managed
embeddings); indexes named in `self_managed` are described with precomputed vectors instead and
need `query_vector`.
Requests need `Authorization: Bearer <token>`; errors come back in Databricks' shape
(`{"error_code", "message"}`) with its status codes, and `fail_next` scripts failures (a 503 to
exercise the client's retries, a 500 for ragworks' error messages).

Example:
    >>> with VectorSearchEmulator({"main.docs.chunks": index}) as vs:       # doctest: +SKIP
    ...     client = AISearchClient(workspace_url=vs.host, personal_access_token=vs.token)
    ...     client.get_index(index_name="main.docs.chunks").similarity_search(
    ...         query_text="hybrid search", columns=["id", "text"])
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar

from ragworks.errors import RagworksError
from ragworks.retrieval.local import Chunk, LocalIndex
from ragworks.retrieval.text import tokenize
from ragworks.testing.emulators._workspace import ApiError, Route, WorkspaceEmulator

MODES = {"ANN": "dense", "HYBRID": "hybrid", "FULL_TEXT": "bm25"}
_API = "/api/2\\.0/vector-search"


class VectorSearchEmulator(WorkspaceEmulator):
    """Serve `indexes` (Unity Catalog name -> LocalIndex) as Vector Search indexes on `endpoint`."""

    thread_name = "vs-emulator"
    routes: ClassVar[list[Route]] = [
        ("GET", re.compile(rf"^{_API}/endpoints/(?P<endpoint>[^/]+)$"), "endpoint_info"),
        ("POST", re.compile(rf"^{_API}/endpoints/(?P<endpoint>[^/]+)/indexes$"), "create_index"),
        ("GET", re.compile(r"^/api/2\.0/serving-endpoints/(?P<name>[^/]+)$"), "embedding_endpoint"),
        ("GET", re.compile(rf"^{_API}/endpoints/[^/]+/indexes/(?P<index>[^/]+)$"), "describe"),
        ("GET", re.compile(rf"^{_API}/indexes/(?P<index>[^/]+)$"), "describe"),
        ("GET", re.compile(rf"^{_API}/indexes/(?P<index>[^/]+)/query$"), "query"),
        ("POST", re.compile(rf"^{_API}/indexes/(?P<index>[^/]+)/query$"), "query"),
        ("GET", re.compile(rf"^{_API}/indexes/(?P<index>[^/]+)/scan$"), "scan"),
        ("POST", re.compile(rf"^{_API}/indexes/(?P<index>[^/]+)/scan$"), "scan"),
        ("POST", re.compile(rf"^{_API}/indexes/(?P<index>[^/]+)/upsert-data$"), "upsert"),
        ("DELETE", re.compile(rf"^{_API}/indexes/(?P<index>[^/]+)/delete-data$"), "delete"),
    ]

    def __init__(
        self,
        indexes: Mapping[str, LocalIndex],
        *,
        token: str = "dapi-emulator",
        endpoint: str = "emulator",
        self_managed: Collection[str] = (),
        tables: Mapping[str, LocalIndex] | None = None,
    ) -> None:
        super().__init__(token=token)
        self.indexes = dict(indexes)
        self.endpoint = endpoint
        self.reject: Callable[[dict[str, Any]], bool] | None = None
        """Upserted rows for which this is true are not stored, and are reported as failed keys."""
        self.self_managed = set(self_managed)
        """Indexes described with precomputed vectors (`embedding_vector_columns`): need `query_vector`."""
        self.no_reranker: set[str] = set()
        """Indexes that ignore a query's `reranker` (and so report no `reranker_time`)."""
        self.tables = dict(tables or {})
        """Delta tables (Unity Catalog name -> their rows) a Delta Sync index may be created over."""
        self.delta_sync: dict[str, dict[str, Any]] = {}
        """Created Delta Sync indexes: name -> the create request's body."""

    def _index(self, name: str) -> LocalIndex:
        try:
            return self.indexes[name]
        except KeyError:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Index '{name}' does not exist.") from None

    def endpoint_info(self, body: dict[str, Any], *, endpoint: str) -> dict[str, Any]:
        """GET an endpoint."""
        if endpoint != self.endpoint:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Vector search endpoint {endpoint} not found.")
        return {"name": endpoint, "endpoint_type": "STANDARD", "endpoint_status": {"state": "ONLINE"}}

    def _dimension(self, name: str, local: LocalIndex) -> int:
        """The vector size a self-managed index stores (0 for managed embeddings)."""
        if name not in self.self_managed or local.embedder is None:
            return 0
        return len(local.embedder.encode(["x"])[0])

    def create_index(self, body: dict[str, Any], *, endpoint: str) -> dict[str, Any]:
        """POST a Delta Sync index over one of `tables`; it serves that table's rows."""
        self.endpoint_info({}, endpoint=endpoint)
        name, spec = str(body.get("name") or ""), body.get("delta_sync_index_spec") or {}
        if body.get("index_type") != "DELTA_SYNC":
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "The emulator creates DELTA_SYNC indexes only.")
        if name in self.indexes:
            raise ApiError(409, "RESOURCE_ALREADY_EXISTS", f"Index {name} already exists.")
        table = self.tables.get(str(spec.get("source_table")))
        if table is None:
            missing = spec.get("source_table")
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Table {missing} does not exist.")
        if body.get("primary_key") not in _schema(table):
            key = body.get("primary_key")
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Primary key {key} is not a column.")
        self.indexes[name], self.delta_sync[name] = table, dict(body)
        if spec.get("embedding_vector_columns"):
            self.self_managed.add(name)
        return self.describe({}, index=name)

    def embedding_endpoint(self, body: dict[str, Any], *, name: str) -> dict[str, Any]:
        """GET the serving endpoint that embeds a created index's text (the client looks it up)."""
        return {"name": name, "id": f"ep-{name}", "route_optimized": False, "state": {"ready": "READY"}}

    def describe(self, body: dict[str, Any], *, index: str) -> dict[str, Any]:
        """GET an index: a Direct Access index over the LocalIndex (or a created Delta Sync index)."""
        name, local = index, self._index(index)
        if name in self.delta_sync:
            created = self.delta_sync[name]
            return {
                **created,
                "endpoint_name": self.endpoint,
                "status": {
                    "ready": True,
                    "detailed_state": "ONLINE_NO_PENDING_UPDATE",
                    "indexed_row_count": len(local),
                },
            }
        spec: dict[str, Any] = {"schema_json": json.dumps(_schema(local))}
        if name in self.self_managed:
            dim = self._dimension(name, local)
            spec["embedding_vector_columns"] = [{"name": "embedding", "embedding_dimension": dim}]
        else:
            spec["embedding_source_columns"] = [{"name": "text", "embedding_model_endpoint_name": "emulator"}]
        return {
            "name": name,
            "endpoint_name": self.endpoint,
            "primary_key": "id",
            "index_type": "DIRECT_ACCESS",
            "direct_access_index_spec": spec,
            "status": {"ready": True, "detailed_state": "ONLINE", "indexed_row_count": len(local)},
        }

    def query(self, body: dict[str, Any], *, index: str) -> dict[str, Any]:
        """Query an index (GET with a JSON body, as the client sends it, or POST)."""
        name, local = index, self._index(index)
        columns = body.get("columns")
        if not isinstance(columns, list) or not columns:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "columns must list column names.")
        missing = [c for c in columns if c not in _schema(local)]
        if missing:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Requested columns to fetch are not present in index: {', '.join(missing)}",
            )
        query, vector = body.get("query_text") or "", body.get("query_vector")
        k = body.get("num_results", 10)
        if not isinstance(k, int) or k < 1:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "num_results must be a positive integer.")
        query_type = str(body.get("query_type") or "ANN").upper()
        if query_type not in MODES:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Unknown query_type {query_type}.")
        if not isinstance(query, str) or (vector is not None and not isinstance(vector, list)):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "query_text is a string, query_vector a list.")
        needs_vector = name in self.self_managed and query_type != "FULL_TEXT"
        if needs_vector and not vector:
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", "query_vector is required: self-managed embeddings."
            )
        if not query.strip() and (query_type != "ANN" or not vector):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"query_text is needed for {query_type}.")
        filters = json.loads(body["filters_json"]) if body.get("filters_json") else None
        unknown = sorted({str(key).split()[0] for key in filters or {}} - set(_schema(local)))
        if unknown:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Filter columns not present in index: {', '.join(unknown)}",
            )
        try:
            mode = MODES[query_type]
            reranking = bool(body.get("reranker")) and name not in self.no_reranker
            fetch = max(k, 50) if reranking else k  # the service reranks its top 50
            docs = local.search(query, k=fetch, filters=filters, mode=mode, vector=vector)  # type: ignore[arg-type]
        except RagworksError as exc:  # a filter on an unknown column, a mode the index cannot do
            raise ApiError(400, "INVALID_PARAMETER_VALUE", str(exc)) from exc
        threshold = body.get("score_threshold")
        if threshold is not None:
            docs = [d for d in docs if d.metadata["score"] >= float(threshold)]
        debug: dict[str, Any] = {}
        if reranking:
            docs, debug = _rerank(docs, body["reranker"], query)[:k], {"reranker_time": 1}
        rows = []
        for doc in docs:
            values = {"id": doc.id, "text": doc.page_content, **doc.metadata}
            rows.append([values.get(c) for c in columns] + [doc.metadata["score"]])
        return {
            "manifest": {
                "column_count": len(columns) + 1,
                "columns": [{"name": c} for c in [*columns, "score"]],
            },
            "result": {"row_count": len(rows), "data_array": rows},
            **({"debug_info": debug} if debug else {}),
        }

    def scan(self, body: dict[str, Any], *, index: str) -> dict[str, Any]:
        """Rows in primary-key order after `last_primary_key`, `num_results` at a time."""
        local = self._index(index)
        after = body.get("last_primary_key")
        chunks = sorted((c for c in local.chunks() if after is None or c.id > after), key=lambda c: c.id)
        page = chunks[: int(body.get("num_results") or 10)]
        data = [
            {"fields": [_field(k, v) for k, v in {"id": c.id, "text": c.text, **c.metadata}.items()]}
            for c in page
        ]
        return {"last_primary_key": page[-1].id if page else None, "data": data}

    def upsert(self, body: dict[str, Any], *, index: str) -> dict[str, Any]:
        """Upsert rows (`inputs_json`: id, text and metadata columns)."""
        local = self._index(index)
        dim = self._dimension(index, local)
        try:
            rows = json.loads(body["inputs_json"])
            chunks = [
                Chunk(
                    id=str(r["id"]),
                    text=str(r["text"]),
                    metadata={k: v for k, v in r.items() if k not in ("id", "text", "embedding")},
                )
                for r in rows
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"rows need id and text: {exc}") from exc
        bad = [r.get("id") for r in rows if dim and len(r.get("embedding") or []) != dim]
        if bad:
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", f"Rows {bad[:5]} need a {dim}-dimensional embedding."
            )
        failed = [
            c.id for c, r in zip(chunks, rows, strict=True) if self.reject is not None and self.reject(r)
        ]
        local.upsert([c for c in chunks if c.id not in failed])
        status = "PARTIAL_SUCCESS" if failed else "SUCCESS"
        return {
            "status": status,
            "result": {"success_row_count": len(chunks) - len(failed), "failed_primary_keys": failed},
        }

    def delete(self, body: dict[str, Any], *, index: str) -> dict[str, Any]:
        """Delete rows by primary key."""
        local = self._index(index)
        keys = [str(k) for k in body.get("primary_keys") or []]
        local.delete(keys)
        return {"status": "SUCCESS", "result": {"success_row_count": len(keys), "failed_primary_keys": []}}


def _rerank(docs: list[Any], block: dict[str, Any], query: str) -> list[Any]:
    """The Databricks reranker's stand-in: results reordered by how many query terms their
    `columns_to_rerank` share, best first (a deterministic order tests can predict)."""
    columns = (block.get("parameters") or {}).get("columns_to_rerank") or []
    if block.get("model") != "databricks_reranker" or not columns:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "reranker needs model and columns_to_rerank.")
    terms = set(tokenize(query))

    def overlap(doc: Any) -> int:
        values = {"text": doc.page_content, **doc.metadata}
        return len(terms.intersection(tokenize(" ".join(str(values.get(c, "")) for c in columns))))

    return sorted(docs, key=overlap, reverse=True)


def _schema(index: LocalIndex) -> dict[str, str]:
    """Column name -> Databricks type: id, text, then every metadata key of the index's chunks."""
    schema = {"id": "string", "text": "string"}
    types = {bool: "boolean", int: "long", float: "double"}
    for chunk in index.chunks():
        for key, value in chunk.metadata.items():
            schema.setdefault(key, types.get(type(value), "string"))
    return schema


def _field(key: str, value: Any) -> dict[str, Any]:
    """One scanned column, typed as the API's protobuf `Value`."""
    if value is None:
        return {"key": key, "value": {"null_value": None}}
    if isinstance(value, bool):
        return {"key": key, "value": {"bool_value": value}}
    if isinstance(value, (int, float)):
        return {"key": key, "value": {"number_value": value}}
    return {"key": key, "value": {"string_value": str(value)}}
