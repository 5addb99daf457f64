"""A local emulator of the Databricks Vector Search REST API, over `LocalIndex`es, on 127.0.0.1.

It speaks enough of the API for the official `databricks-vectorsearch` client (and databricks-sdk's
host-metadata probe): describe an endpoint and an index, query (`query_text` and/or `query_vector`,
`columns`, `num_results`, `filters_json`, `score_threshold`, `query_type` ANN / HYBRID / FULL_TEXT),
upsert and delete rows. Each index is a Direct Access index with primary key `id`, text column `text`
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
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ragworks.errors import RagworksError
from ragworks.retrieval.local import Chunk, LocalIndex

MODES = {"ANN": "dense", "HYBRID": "hybrid", "FULL_TEXT": "bm25"}
_ROUTES = [
    ("GET", re.compile(r"^/api/2\.0/vector-search/endpoints/(?P<endpoint>[^/]+)$"), "endpoint"),
    ("GET", re.compile(r"^/api/2\.0/vector-search/endpoints/[^/]+/indexes/(?P<index>[^/]+)$"), "describe"),
    ("GET", re.compile(r"^/api/2\.0/vector-search/indexes/(?P<index>[^/]+)$"), "describe"),
    ("GET", re.compile(r"^/api/2\.0/vector-search/indexes/(?P<index>[^/]+)/query$"), "query"),
    ("POST", re.compile(r"^/api/2\.0/vector-search/indexes/(?P<index>[^/]+)/query$"), "query"),
    ("POST", re.compile(r"^/api/2\.0/vector-search/indexes/(?P<index>[^/]+)/upsert-data$"), "upsert"),
    ("DELETE", re.compile(r"^/api/2\.0/vector-search/indexes/(?P<index>[^/]+)/delete-data$"), "delete"),
]


class ApiError(Exception):
    """An error reply: HTTP status, Databricks error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the emulator received (the Authorization header is not kept)."""

    method: str
    path: str
    body: dict[str, Any]


class VectorSearchEmulator:
    """Serve `indexes` (Unity Catalog name -> LocalIndex) as Vector Search indexes on `endpoint`."""

    def __init__(
        self,
        indexes: Mapping[str, LocalIndex],
        *,
        token: str = "dapi-emulator",
        endpoint: str = "emulator",
        self_managed: Collection[str] = (),
    ) -> None:
        self.indexes = dict(indexes)
        self.self_managed = set(self_managed)
        """Indexes described with precomputed vectors (`embedding_vector_columns`): need `query_vector`."""
        self.token = token
        self.endpoint = endpoint
        self.requests: list[RecordedRequest] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The workspace URL to give the client (`DATABRICKS_HOST`)."""
        if self._server is None:
            raise RuntimeError("The emulator is not running; use it as a context manager or call start().")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` requests with `status` (e.g. 503, which the client retries)."""
        with self._lock:
            self._failures.extend([status] * times)

    def start(self) -> VectorSearchEmulator:
        """Listen on a free loopback port in a daemon thread."""
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="vs-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> VectorSearchEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(
        self, method: str, path: str, body: dict[str, Any], authorization: str | None
    ) -> dict[str, Any]:
        """Answer one request, or raise ApiError."""
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body))
            failure = self._failures.pop(0) if self._failures else None
        if method == "GET" and path == "/.well-known/databricks-config":  # databricks-sdk's host probe
            return {"oidc_endpoint": f"{self.host}/oidc", "workspace_id": "1"}
        if authorization != f"Bearer {self.token}":
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")
        if failure is not None:
            raise ApiError(failure, "TEMPORARILY_UNAVAILABLE", f"Scripted failure ({failure}).")
        for route_method, pattern, action in _ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                args = match.groupdict()
                if action == "endpoint":
                    return self._endpoint(args["endpoint"])
                index = self._index(args["index"])
                return getattr(self, f"_{action}")(args["index"], index, body)
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'.")

    def _index(self, name: str) -> LocalIndex:
        try:
            return self.indexes[name]
        except KeyError:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Index '{name}' does not exist.") from None

    def _endpoint(self, name: str) -> dict[str, Any]:
        if name != self.endpoint:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Vector search endpoint {name} not found.")
        return {"name": name, "endpoint_type": "STANDARD", "endpoint_status": {"state": "ONLINE"}}

    def _describe(self, name: str, index: LocalIndex, body: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {"schema_json": json.dumps(_schema(index))}
        if name in self.self_managed:
            dim = len(index.embedder.encode(["x"])[0]) if index.embedder is not None else 0
            spec["embedding_vector_columns"] = [{"name": "embedding", "embedding_dimension": dim}]
        else:
            spec["embedding_source_columns"] = [{"name": "text", "embedding_model_endpoint_name": "emulator"}]
        return {
            "name": name,
            "endpoint_name": self.endpoint,
            "primary_key": "id",
            "index_type": "DIRECT_ACCESS",
            "direct_access_index_spec": spec,
            "status": {"ready": True, "detailed_state": "ONLINE", "indexed_row_count": len(index)},
        }

    def _query(self, name: str, index: LocalIndex, body: dict[str, Any]) -> dict[str, Any]:
        columns = body.get("columns")
        if not isinstance(columns, list) or not columns:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "columns must list column names.")
        missing = [c for c in columns if c not in _schema(index)]
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
        unknown = sorted({str(key).split()[0] for key in filters or {}} - set(_schema(index)))
        if unknown:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Filter columns not present in index: {', '.join(unknown)}",
            )
        try:
            mode = MODES[query_type]
            docs = index.search(query, k=k, filters=filters, mode=mode, vector=vector)  # type: ignore[arg-type]
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

    def _upsert(self, name: str, index: LocalIndex, body: dict[str, Any]) -> dict[str, Any]:
        try:
            rows = json.loads(body["inputs_json"])
            chunks = [
                Chunk(
                    id=str(r["id"]),
                    text=str(r["text"]),
                    metadata={k: v for k, v in r.items() if k not in ("id", "text")},
                )
                for r in rows
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"rows need id and text: {exc}") from exc
        index.upsert(chunks)
        return {"status": "SUCCESS", "result": {"success_row_count": len(chunks), "failed_primary_keys": []}}

    def _delete(self, name: str, index: LocalIndex, body: dict[str, Any]) -> dict[str, Any]:
        keys = [str(k) for k in body.get("primary_keys") or []]
        index.delete(keys)
        return {"status": "SUCCESS", "result": {"success_row_count": len(keys), "failed_primary_keys": []}}


def _schema(index: LocalIndex) -> dict[str, str]:
    """Column name -> Databricks type: id, text, then every metadata key of the index's chunks."""
    schema = {"id": "string", "text": "string"}
    types = {bool: "boolean", int: "long", float: "double"}
    for chunk in index.chunks():
        for key, value in chunk.metadata.items():
            schema.setdefault(key, types.get(type(value), "string"))
    return schema


class _Handler(BaseHTTPRequestHandler):
    owner: VectorSearchEmulator

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            path = self.path.split("?", 1)[0]
            status, payload = 200, self.owner.handle(method, path, body, self.headers.get("Authorization"))
        except ApiError as exc:
            status, payload = exc.status, {"error_code": exc.code, "message": exc.message}
        except ValueError as exc:
            status, payload = 400, {"error_code": "MALFORMED_REQUEST", "message": f"Malformed JSON: {exc}"}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
