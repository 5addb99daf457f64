"""A local emulator of the Databricks Vector Search REST API, over `LocalIndex`es, on 127.0.0.1.

It speaks enough of the API for the official `databricks-vectorsearch` client (and databricks-sdk's
host-metadata probe): describe an endpoint and an index, query (`query_text` and/or `query_vector`,
`columns`, `num_results`, `filters_json`, `score_threshold`, `query_type` ANN / HYBRID / FULL_TEXT),
scan, upsert and delete rows. Each index is a Direct Access index with primary key `id`, text column `text`
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
from ragworks.testing.emulators._workspace import ApiError, Route, WorkspaceEmulator

MODES = {"ANN": "dense", "HYBRID": "hybrid", "FULL_TEXT": "bm25"}
_API = "/api/2\\.0/vector-search"


class VectorSearchEmulator(WorkspaceEmulator):
    """Serve `indexes` (Unity Catalog name -> LocalIndex) as Vector Search indexes on `endpoint`."""

    thread_name = "vs-emulator"
    routes: ClassVar[list[Route]] = [
        ("GET", re.compile(rf"^{_API}/endpoints/(?P<endpoint>[^/]+)$"), "endpoint_info"),
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
    ) -> None:
        super().__init__(token=token)
        self.indexes = dict(indexes)
        self.endpoint = endpoint
        self.reject: Callable[[dict[str, Any]], bool] | None = None
        """Upserted rows for which this is true are not stored, and are reported as failed keys."""
        self.self_managed = set(self_managed)
        """Indexes described with precomputed vectors (`embedding_vector_columns`): need `query_vector`."""

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

    def describe(self, body: dict[str, Any], *, index: str) -> dict[str, Any]:
        """GET an index: a Direct Access index over the LocalIndex."""
        name, local = index, self._index(index)
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
            docs = local.search(query, k=k, filters=filters, mode=mode, vector=vector)  # type: ignore[arg-type]
        except RagworksError as exc:  # a filter on an unknown column, a mode the index cannot do
            raise ApiError(400, "INVALID_PARAMETER_VALUE", str(exc)) from exc
        threshold = body.get("score_threshold")
        if threshold is not None:
            docs = [d for d in docs if d.metadata["score"] >= float(threshold)]
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
