"""A tiny OpenAI-compatible chat-completions server on 127.0.0.1 whose replies a test scripts.

It speaks enough of the API for the real `openai` client: `POST /v1/chat/completions` (plain JSON,
or SSE when `stream` is true, with tool calls and usage) and `GET /v1/models`. Replies come from a
queue, or from a `responder(request) -> StubReply` function (handy for LLM-judge tests). Error
replies (`StubReply(status=429)`) exercise the client's retries and ragworks' error messages.

Faults a test can script on a reply (`StubReply(fault=...)`, after `fault_after` words of content):

    drop             the connection is cut in the middle of the body (a chunked read left incomplete)
    malformed_chunk  a stream event that is not JSON
    empty_choices    a stream chunk with `"choices": []` and no usage
    no_finish        the stream ends cleanly, with neither a finish reason nor `[DONE]`
    no_choices       a non-streaming reply with `"choices": []`
    no_message       a non-streaming choice without its `message`
    bad_json         a non-streaming `application/json` body that is not JSON
    not_json         a non-streaming 200 reply that is an HTML page

`hang_s` waits before answering (then answers, if the client is still there); `stall_s` pauses a
stream after `fault_after` words; `retry_after` sends a `Retry-After` header (seconds).

Example:
    >>> with OpenAIStub(["Hello there."]) as stub:                      # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=stub.base_url, api_key="x")
    ...     client.chat.completions.create(model="m", messages=[...]).choices[0].message.content
    'Hello there.'
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from ragworks.testing.emulators._loopback import LoopbackServer

_WORDS = re.compile(r"\S+\s*")

Fault = Literal[
    "drop", "malformed_chunk", "empty_choices", "no_finish",  # streams
    "no_choices", "no_message", "bad_json", "not_json",  # plain replies ("drop" too)
]
_STREAM_FAULTS = frozenset({"drop", "malformed_chunk", "empty_choices", "no_finish"})


@dataclass(frozen=True, slots=True, kw_only=True)
class StubReply:
    """One scripted answer: text, tool calls, or an HTTP error."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Each `{"name": ..., "arguments": {...}}`; ids are generated when missing."""
    status: int = 200
    """A non-200 status sends an OpenAI-style error body instead."""
    error: str = "stub error"
    retry_after_ms: int | None = 5
    """Sent with 429/5xx replies so the client's retry waits only this long."""
    retry_after: float | None = None
    """Sent as `Retry-After` (seconds) with an error reply."""
    usage: dict[str, int] | None = None
    """Token usage; by default, word counts of the prompt and the reply."""
    fault: Fault | None = None
    """Break the reply this way (see the module docstring); streaming and non-streaming faults differ."""
    fault_after: int = 2
    """How many words of `content` are streamed before a stream fault or a stall."""
    hang_s: float = 0.0
    """Seconds to wait before answering at all."""
    stall_s: float = 0.0
    """Seconds a stream pauses after `fault_after` words, before going on."""


Responder = Callable[[dict[str, Any]], StubReply]


@dataclass(slots=True)
class RecordedRequest:
    """What the stub received: the JSON body and the headers (the test may check auth)."""

    body: dict[str, Any]
    headers: dict[str, str]


class OpenAIStub(LoopbackServer):
    """A scripted OpenAI-compatible server; use it as a context manager or `start()` / `stop()`."""

    thread_name = "openai-stub"

    def __init__(
        self,
        replies: Iterable[StubReply | str] = (),
        *,
        responder: Responder | None = None,
        model: str = "stub-model",
    ) -> None:
        super().__init__()
        self.model = model
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._queue: deque[StubReply] = deque()
        self._lock = threading.Lock()
        self.enqueue(*replies)

    def enqueue(self, *replies: StubReply | str) -> None:
        """Add replies to the end of the queue."""
        with self._lock:
            self._queue.extend(StubReply(content=r) if isinstance(r, str) else r for r in replies)

    @property
    def base_url(self) -> str:
        """The `/v1` URL to give the `openai` client (OPENAI_BASE_URL)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The handler, bound to this stub's queue and records."""
        return type("_Handler", (_Handler,), {"stub": self})

    def next_reply(self, body: dict[str, Any]) -> StubReply:
        """The reply to a request: the responder's, else the next queued one."""
        if self.responder is not None:
            return self.responder(body)
        with self._lock:
            if not self._queue:
                return StubReply(
                    status=500, error="OpenAIStub has no scripted reply left.", retry_after_ms=None
                )
            return self._queue.popleft()

    def reset(self) -> None:
        """Forget the queued replies and the recorded requests (a module-wide stub between tests)."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    def record(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Keep a request for the test to inspect."""
        with self._lock:
            self.requests.append(RecordedRequest(body=body, headers=headers))


class _Handler(BaseHTTPRequestHandler):
    stub: OpenAIStub

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def handle(self) -> None:
        # The client may leave (it timed out, or a test cut it off): nobody is left to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.stub.model, "object": "model"}]})
        else:
            self._json(404, _error_body("not found", 404))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error_body("invalid JSON body", 400))
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, _error_body(f"no route {self.path}", 404))
            return
        self.stub.record(body, {k.lower(): v for k, v in self.headers.items()})
        reply = self.stub.next_reply(body)
        if reply.hang_s:
            time.sleep(reply.hang_s)
        if reply.status != 200:
            self._json(reply.status, _error_body(reply.error, reply.status), _retry_headers(reply))
        elif body.get("stream"):
            self._stream(body, reply)
        elif reply.fault in ("bad_json", "not_json", "drop"):
            self._broken_body(reply.fault)
        else:
            self._json(200, _completion(body, reply, self.stub.model))

    def _stream(self, body: dict[str, Any], reply: StubReply) -> None:
        fault = reply.fault if reply.fault in _STREAM_FAULTS else None
        chunked = fault == "drop"
        if chunked:  # a chunked body, so that a cut is visible to the client as an incomplete read
            self.protocol_version = "HTTP/1.1"
            self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()  # otherwise HTTP/1.0: the body ends when the connection closes
        for event in _stream_events(body, reply, self.stub.model, fault):
            if event is _STALL:
                time.sleep(reply.stall_s)
            elif event is _CUT:
                self.wfile.write(b"40\r\ndata: {")  # a chunk promised but never finished
                self.wfile.flush()
                return
            else:
                data = f"data: {event}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                self.wfile.flush()

    def _broken_body(self, fault: str) -> None:
        if fault == "not_json":
            data, kind = b"<html><body>502 Bad Gateway</body></html>", "text/html"
        else:
            data, kind = b'{"id": "chatcmpl-broken", "choices": [', "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data) * (4 if fault == "drop" else 1)))
        self.end_headers()
        self.wfile.write(data)  # for "drop", the connection closes before the promised length
        self.wfile.flush()

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def _retry_headers(reply: StubReply) -> dict[str, str]:
    headers = {}
    if reply.retry_after_ms is not None:
        headers["retry-after-ms"] = str(reply.retry_after_ms)
    if reply.retry_after is not None:
        headers["retry-after"] = f"{reply.retry_after:g}"
    return headers


def _error_body(message: str, status: int) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
    return {"error": {"message": message, "type": kind.get(status, "server_error"), "code": None}}


def _tool_calls(reply: StubReply) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}))},
        }
        for call in reply.tool_calls
    ]


def _usage(body: dict[str, Any], reply: StubReply) -> dict[str, int]:
    if reply.usage is not None:
        return reply.usage
    prompt = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
    completion = len(reply.content.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(body: dict[str, Any], reply: StubReply, model: str) -> dict[str, Any]:
    calls = _tool_calls(reply)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else "stop"
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if reply.fault == "no_message":
        del choice["message"]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or model,
        "choices": [] if reply.fault == "no_choices" else [choice],
        "usage": _usage(body, reply),
    }


_STALL, _CUT = object(), object()


def _stream_events(body: dict[str, Any], reply: StubReply, model: str, fault: str | None) -> Iterator[Any]:
    """The `data:` payloads of a stream, with the scripted fault in place after `fault_after` words."""
    chunks = _stream_chunks(body, reply, model)
    yield json.dumps(next(chunks))  # the role chunk
    if fault == "no_finish":  # the words, then nothing: no finish reason, no usage, no [DONE]
        yield from (json.dumps(c) for c in chunks if c["choices"] and not c["choices"][0]["finish_reason"])
        return
    for index, chunk in enumerate(chunks):
        if index == reply.fault_after:
            if reply.stall_s:
                yield _STALL
            if fault == "drop":
                yield _CUT
                return
            if fault == "malformed_chunk":
                yield '{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "x'
            if fault == "empty_choices":
                yield json.dumps({**chunk, "choices": []})
        yield json.dumps(chunk)
    yield "[DONE]"


def _stream_chunks(body: dict[str, Any], reply: StubReply, model: str) -> Iterator[dict[str, Any]]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model") or model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    for word in _WORDS.findall(reply.content):
        yield chunk({"content": word})
    calls = _tool_calls(reply)
    for index, call in enumerate(calls):
        yield chunk({"tool_calls": [{"index": index, **call}]})
    yield chunk({}, "tool_calls" if calls else "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        yield {**base, "choices": [], "usage": _usage(body, reply)}
