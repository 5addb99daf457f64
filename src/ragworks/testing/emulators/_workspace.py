"""What every Databricks REST emulator shares: a loopback JSON server with bearer auth and scripted failures.

A subclass lists its routes as `(method, regex, handler name)`; a handler takes the path's named groups
and the JSON body and returns the JSON reply, or raises `ApiError`. Errors use Databricks' shape
(`{"error_code", "message"}`). databricks-sdk's unauthenticated host probe
(`/.well-known/databricks-config`) is answered for every emulator.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

from ragworks.testing.emulators._loopback import LoopbackServer


class ApiError(Exception):
    """An error reply: HTTP status, Databricks error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request an emulator received (the Authorization header is not kept)."""

    method: str
    path: str
    body: dict[str, Any]


Route = tuple[str, "re.Pattern[str]", str]


class WorkspaceEmulator(LoopbackServer):
    """A Databricks workspace's REST API on 127.0.0.1, in a daemon thread; a context manager."""

    routes: ClassVar[list[Route]] = []

    def __init__(self, *, token: str) -> None:
        super().__init__()
        self.token = token
        self.requests: list[RecordedRequest] = []
        self._failures: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        """The workspace URL to give the client (`DATABRICKS_HOST`)."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, times: int = 1, *, path_suffix: str = "") -> None:
        """Answer the next `times` API requests (whose path ends with `path_suffix`) with `status`."""
        with self._lock:
            self._failures.extend([(status, path_suffix)] * times)

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The handler, bound to this emulator."""
        return type("_BoundHandler", (_Handler,), {"owner": self})

    def handle(
        self, method: str, path: str, body: dict[str, Any], authorization: str | None
    ) -> dict[str, Any]:
        """Answer one request, or raise ApiError."""
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body))
        if method == "GET" and path == "/.well-known/databricks-config":  # databricks-sdk's host probe
            return {"oidc_endpoint": f"{self.host}/oidc", "workspace_id": "1"}
        if authorization != f"Bearer {self.token}":
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")
        with self._lock:  # a scripted failure is spent only on a request that reached the API
            failure = next((f for f in self._failures if path.endswith(f[1])), None)
            if failure is not None:
                self._failures.remove(failure)
        if failure is not None:
            raise ApiError(failure[0], "TEMPORARILY_UNAVAILABLE", f"Scripted failure ({failure[0]}).")
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match and route_method == method:
                reply: dict[str, Any] = getattr(self, handler)(body, **match.groupdict())
                return reply
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'.")


class _Handler(BaseHTTPRequestHandler):
    owner: WorkspaceEmulator

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

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
