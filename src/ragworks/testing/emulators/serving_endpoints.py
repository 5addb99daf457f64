"""A local emulator of Databricks Model Serving's serving-endpoints REST API, on 127.0.0.1.

It speaks enough of the API for databricks-sdk's `WorkspaceClient().serving_endpoints` and for the
`openai` client pointed at `{host}/serving-endpoints` (as `get_open_ai_client()` does):

    POST   /api/2.0/serving-endpoints                create an endpoint (served entities)
    GET    /api/2.0/serving-endpoints/{name}         the endpoint, its state and configs
    PUT    /api/2.0/serving-endpoints/{name}/config  a new config (an update)
    DELETE /api/2.0/serving-endpoints/{name}
    GET    /api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs
    POST   /serving-endpoints/{name}/invocations     a ResponsesAgent request (`input`) or `messages`
    POST   /serving-endpoints/responses              the OpenAI Responses route (`model` = endpoint name;
                                                     `stream: true` answers with Responses SSE events)
    POST   /serving-endpoints/chat/completions       the OpenAI chat-completions route

A create or an update starts a deployment: the endpoint reads `config_update: IN_PROGRESS` (and
`ready: NOT_READY` until a first config is served) for `polls_to_ready` GETs, then READY and
NOT_UPDATING. Scriptable failures: `fail_next_build(message)` (the deployment ends DEPLOYMENT_FAILED
and UPDATE_FAILED with that message), `max_endpoints` (a create beyond it is refused with
QUOTA_EXCEEDED), and `script_error(action, ...)` (e.g. 403 PERMISSION_DENIED on `create`). Answers
come from a queue of scripted replies or a `responder(body)`; every request body is recorded in
`requests` (the Authorization header is not).

Example:
    >>> with ServingEndpointsEmulator(replies=["Hello."]) as ms:          # doctest: +SKIP
    ...     w = WorkspaceClient(host=ms.host, token=ms.token)
    ...     w.serving_endpoints.create(name="agent", config=...).result()
"""

from __future__ import annotations

import io
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar, Literal

from ragworks.testing.emulators._workspace import (
    ApiError,
    RecordedRequest,
    Route,
    WorkspaceEmulator,
    _Handler,
)

Action = Literal["create", "get", "update", "delete", "query"]
WORKLOAD_SIZES = ("Small", "Medium", "Large")
_API = "/api/2\\.0/serving-endpoints"
_NAME = "(?P<name>[A-Za-z0-9_-]+)"


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointReply:
    """One scripted answer of a served agent: its text and the sources it returns (custom_outputs)."""

    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    """A non-200 status answers with a Databricks error body instead."""
    error: str = "The served model failed."


Responder = Callable[[dict[str, Any]], "EndpointReply | str"]


@dataclass(slots=True)
class _Endpoint:
    """One endpoint's state: its served config, and the deployment in progress, if any."""

    name: str
    active: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] | None = None
    polls_left: int = 0
    build_failure: str | None = None
    failed: bool = False
    version: int = 0
    created: int = field(default_factory=lambda: int(time.time() * 1000))


class ServingEndpointsEmulator(WorkspaceEmulator):
    """Model Serving endpoints on 127.0.0.1: deployments that become ready after `polls_to_ready` GETs."""

    thread_name = "serving-emulator"
    routes: ClassVar[list[Route]] = [
        ("POST", re.compile(rf"^{_API}$"), "create"),
        ("GET", re.compile(rf"^{_API}/{_NAME}$"), "get"),
        ("PUT", re.compile(rf"^{_API}/{_NAME}/config$"), "update_config"),
        ("DELETE", re.compile(rf"^{_API}/{_NAME}$"), "delete"),
        ("GET", re.compile(rf"^{_API}/{_NAME}/served-models/(?P<served>[^/]+)/build-logs$"), "build_logs"),
        ("POST", re.compile(rf"^/serving-endpoints/{_NAME}/invocations$"), "invocations"),
        ("POST", re.compile(r"^/serving-endpoints/responses$"), "responses"),
        ("POST", re.compile(r"^/serving-endpoints/chat/completions$"), "chat_completions"),
    ]

    def __init__(
        self,
        *,
        token: str = "dapi-emulator",
        polls_to_ready: int = 2,
        max_endpoints: int | None = None,
        replies: Iterable[EndpointReply | str] = (),
        responder: Responder | None = None,
    ) -> None:
        super().__init__(token=token)
        self.polls_to_ready = polls_to_ready
        """GETs that see a deployment IN_PROGRESS before one sees it done."""
        self.max_endpoints = max_endpoints
        self.responder = responder
        self.endpoints: dict[str, _Endpoint] = {}
        self._replies: deque[EndpointReply] = deque()
        self._errors: list[tuple[Action, ApiError]] = []
        self._build_failures: deque[str] = deque()
        self._ids = itertools.count(1)
        self.enqueue(*replies)

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The workspace handler, which also streams Responses events."""
        return type("_BoundServingHandler", (_ServingHandler,), {"owner": self})

    # ----------------------------------------------------------------------------------- scripting

    def enqueue(self, *replies: EndpointReply | str) -> None:
        """Answers for the next queries, in order (after them: an echo of the question)."""
        with self._lock:
            self._replies.extend(EndpointReply(text=r) if isinstance(r, str) else r for r in replies)

    def fail_next_build(self, message: str) -> None:
        """The next deployment (create or update) fails with this container-build message."""
        with self._lock:
            self._build_failures.append(message)

    def script_error(self, action: Action, status: int, code: str, message: str, *, times: int = 1) -> None:
        """Answer the next `times` `action` requests with this Databricks error."""
        with self._lock:
            self._errors.extend([(action, ApiError(status, code, message))] * times)

    def bodies(self, method: str, path_suffix: str = "") -> list[dict[str, Any]]:
        """The bodies of the recorded requests with this method whose path ends with `path_suffix`."""
        return [r.body for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def _scripted(self, action: Action) -> None:
        with self._lock:
            hit = next((e for e in self._errors if e[0] == action), None)
            if hit is not None:
                self._errors.remove(hit)
        if hit is not None:
            raise hit[1]

    # ------------------------------------------------------------------------------ control plane

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST an endpoint: validate its served entities and start its first deployment."""
        self._scripted("create")
        name = str(body.get("name") or "")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid endpoint name {name!r}.")
        entities = _entities((body.get("config") or {}).get("served_entities"))
        with self._lock:
            if name in self.endpoints:
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists.")
            if self.max_endpoints is not None and len(self.endpoints) >= self.max_endpoints:
                raise ApiError(
                    400,
                    "QUOTA_EXCEEDED",
                    f"The workspace has reached its limit of {self.max_endpoints} serving endpoints; "
                    "delete an endpoint or request a quota increase.",
                )
            endpoint = self.endpoints[name] = _Endpoint(name=name)
            self._deploy(endpoint, entities)
            return self._describe(endpoint)

    def get(self, body: dict[str, Any], *, name: str) -> dict[str, Any]:
        """GET an endpoint; each GET moves a deployment in progress one poll on."""
        self._scripted("get")
        with self._lock:
            endpoint = self._endpoint(name)
            self._advance(endpoint)
            return self._describe(endpoint)

    def update_config(self, body: dict[str, Any], *, name: str) -> dict[str, Any]:
        """PUT a new config: refused while another update is in progress."""
        self._scripted("update")
        entities = _entities(body.get("served_entities"))
        with self._lock:
            endpoint = self._endpoint(name)
            if endpoint.pending is not None and not endpoint.failed:
                raise ApiError(
                    409,
                    "RESOURCE_CONFLICT",
                    f"Endpoint '{name}' is currently being updated; wait until the update completes.",
                )
            self._deploy(endpoint, entities)
            return self._describe(endpoint)

    def delete(self, body: dict[str, Any], *, name: str) -> dict[str, Any]:
        """DELETE an endpoint."""
        self._scripted("delete")
        with self._lock:
            self._endpoint(name)
            del self.endpoints[name]
        return {}

    def build_logs(self, body: dict[str, Any], *, name: str, served: str) -> dict[str, Any]:
        """The build logs of a served entity (its failure message, when the build failed)."""
        with self._lock:
            endpoint = self._endpoint(name)
            message = endpoint.build_failure if endpoint.failed else None
        return {"logs": f"Building {served}...\n" + (f"ERROR: {message}\n" if message else "Done.\n")}

    def _endpoint(self, name: str) -> _Endpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Endpoint '{name}' does not exist.") from None

    def _deploy(self, endpoint: _Endpoint, entities: list[dict[str, Any]]) -> None:
        """Start a deployment of `entities` (under the lock)."""
        endpoint.pending, endpoint.polls_left, endpoint.failed = entities, self.polls_to_ready, False
        endpoint.build_failure = self._build_failures.popleft() if self._build_failures else None

    def _advance(self, endpoint: _Endpoint) -> None:
        """One poll of a deployment in progress: done (or failed) once its polls are spent."""
        if endpoint.pending is None or endpoint.failed:
            return
        if endpoint.polls_left > 0:
            endpoint.polls_left -= 1
            return
        if endpoint.build_failure is not None:
            endpoint.failed = True
            return
        endpoint.active, endpoint.pending = endpoint.pending, None
        endpoint.version += 1

    def _describe(self, endpoint: _Endpoint) -> dict[str, Any]:
        """The endpoint as `ServingEndpointDetailed` JSON."""
        updating = endpoint.pending is not None
        config_update = (
            "UPDATE_FAILED" if endpoint.failed else ("IN_PROGRESS" if updating else "NOT_UPDATING")
        )
        reply: dict[str, Any] = {
            "name": endpoint.name,
            "id": f"ep-{endpoint.name}",
            "creator": "emulator@example.com",
            "creation_timestamp": endpoint.created,
            "task": "agent/v1/responses",
            "state": {"ready": "READY" if endpoint.active else "NOT_READY", "config_update": config_update},
        }
        if endpoint.active:
            reply["config"] = {
                "config_version": endpoint.version,
                "served_entities": [_served(e, "DEPLOYMENT_READY", "") for e in endpoint.active],
            }
        if endpoint.pending is not None:
            if endpoint.failed:
                state, message = (
                    "DEPLOYMENT_FAILED",
                    f"Container image creation failed: {endpoint.build_failure}",
                )
            else:
                state, message = "DEPLOYMENT_CREATING", "Creating the container image for the served entity."
            reply["pending_config"] = {
                "config_version": endpoint.version + 1,
                "served_entities": [_served(e, state, message) for e in endpoint.pending],
            }
        return reply

    # -------------------------------------------------------------------------------- data plane

    def invocations(self, body: dict[str, Any], *, name: str) -> dict[str, Any]:
        """Query an endpoint: a ResponsesAgent request (`input`) or chat `messages`."""
        self._ready(name)
        if "input" in body:
            return _response(name, self._answer(body), next(self._ids))
        if "messages" in body:
            return _completion(name, self._answer(body), next(self._ids))
        raise ApiError(
            400, "BAD_REQUEST", "Invalid input: this agent takes a Responses request ('input') or 'messages'."
        )

    def responses(self, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI Responses route: `model` names the endpoint (a streamed request: `stream_events`)."""
        name = self._model(body)
        return _response(name, self._answer(body), next(self._ids))

    def stream_events(self, body: dict[str, Any], authorization: str | None) -> list[dict[str, Any]]:
        """The Responses stream of one answer (`stream: true`), or an ApiError before any event."""
        with self._lock:
            self.requests.append(RecordedRequest("POST", "/serving-endpoints/responses", body))
        if authorization != f"Bearer {self.token}":
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")
        name = self._model(body)
        response = _response(name, self._answer(body), next(self._ids))
        [item] = response["output"]
        text = item["content"][0]["text"]
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {**response, "status": "in_progress", "output": []}}
        ]
        for n, word in enumerate(re.findall(r"\S+\s*", text)):
            delta = {"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": word}
            events.append({"type": "response.output_text.delta", "sequence_number": n, **delta})
        done = {"output_index": 0, "item": item, "custom_outputs": response["custom_outputs"]}
        events.append({"type": "response.output_item.done", **done})
        events.append({"type": "response.completed", "response": response})
        return events

    def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI chat-completions route: `model` names the endpoint."""
        name = self._model(body)
        if body.get("stream"):
            raise ApiError(400, "BAD_REQUEST", "The emulator answers without streaming: send stream=false.")
        return _completion(name, self._answer(body), next(self._ids))

    def _model(self, body: dict[str, Any]) -> str:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "BAD_REQUEST", "'model' must name a serving endpoint.")
        self._ready(name)
        return name

    def _ready(self, name: str) -> None:
        self._scripted("query")
        with self._lock:
            endpoint = self._endpoint(name)
            if not endpoint.active:
                raise ApiError(
                    400, "BAD_REQUEST", f"Endpoint '{name}' is not ready: no served entity is ready yet."
                )

    def _answer(self, body: dict[str, Any]) -> EndpointReply:
        if self.responder is not None:
            reply = self.responder(body)
        else:
            with self._lock:
                reply = self._replies.popleft() if self._replies else EndpointReply(text=_echo(body))
        reply = EndpointReply(text=reply) if isinstance(reply, str) else reply
        if reply.status != 200:
            raise ApiError(reply.status, "INTERNAL_ERROR", reply.error)
        return reply


def _entities(raw: Any) -> list[dict[str, Any]]:
    """Validated served entities of a request (Databricks' own messages for what it refuses)."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "The config must list at least one served entity.")
    entities = []
    for entity in raw:
        if not isinstance(entity, dict) or not entity.get("entity_name") or not entity.get("entity_version"):
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", "A served entity needs entity_name and entity_version."
            )
        size = entity.get("workload_size", "Small")
        if size not in WORKLOAD_SIZES:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid workload size {size!r}.")
        env = entity.get("environment_vars") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "environment_vars maps names to strings.")
        entities.append(dict(entity))
    return entities


def _served(entity: dict[str, Any], deployment: str, message: str) -> dict[str, Any]:
    """A served entity as the API describes it (name defaults to `<model>-<version>`)."""
    short = str(entity["entity_name"]).rsplit(".", 1)[-1]
    described = {
        "name": entity.get("name") or f"{short}-{entity['entity_version']}",
        "entity_name": entity["entity_name"],
        "entity_version": str(entity["entity_version"]),
        "workload_size": entity.get("workload_size", "Small"),
        "scale_to_zero_enabled": bool(entity.get("scale_to_zero_enabled", False)),
        "state": {"deployment": deployment, "deployment_state_message": message},
    }
    if entity.get("environment_vars"):
        described["environment_vars"] = dict(entity["environment_vars"])
    return described


def _echo(body: dict[str, Any]) -> str:
    """The default answer: the last user message, echoed."""
    turns: list[Any] = body["input"] if isinstance(body.get("input"), list) else body.get("messages") or []
    text = next((t.get("content") for t in reversed(turns) if isinstance(t, dict)), "")
    return f"You asked: {text}" if isinstance(text, str) else "You asked something."


def _response(name: str, reply: EndpointReply, n: int) -> dict[str, Any]:
    """A ResponsesAgent answer, as Model Serving returns it (with custom_outputs)."""
    message = {
        "type": "message",
        "id": f"msg_{n}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
    }
    return {
        "id": f"resp_{n}",
        "object": "response",
        "created_at": int(time.time()),
        "model": name,
        "status": "completed",
        "output": [message],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "custom_outputs": {"sources": reply.sources},
    }


def _completion(name: str, reply: EndpointReply, n: int) -> dict[str, Any]:
    """A chat completion of the scripted answer."""
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply.text}}
        ],
        "custom_outputs": {"sources": reply.sources},
    }


class _ServingHandler(_Handler):
    """The workspace handler, plus Server-Sent Events for a streamed Responses request."""

    owner: ServingEndpointsEmulator

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if method == "POST" and self.path.split("?", 1)[0] == "/serving-endpoints/responses":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("stream"):
                self._stream(body)
                return
        self.rfile = io.BytesIO(raw)  # the workspace handler reads the body again
        super()._dispatch(method)

    def _stream(self, body: dict[str, Any]) -> None:
        try:
            events = self.owner.stream_events(body, self.headers.get("Authorization"))
        except ApiError as exc:
            data = json.dumps({"error_code": exc.code, "message": exc.message}).encode()
            self.send_response(exc.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        for event in events:
            self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
