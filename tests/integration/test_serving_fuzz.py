"""Hostile and generated requests never get a 500: schemathesis over `/openapi.json`, plus hand-written cases.

The app serves the real agent (offline model, tiny index) on 127.0.0.1. Schemathesis generates bodies
from the documented schemas, valid and invalid, with a fixed budget and seed; every answer must be
below 500 (502/503/504 would be deliberate backend statuses). The hand-written cases are the bodies a
hostile client sends: deep nesting, huge numbers, wrong types, invalid UTF-8, empty and non-object
bodies; each must be a 400 in OpenAI's error shape, logged in at most one line, with no traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ragworks.agents import build_agent
from ragworks.serving import build_app, serve_in_thread

schemathesis = pytest.importorskip("schemathesis")  # the dev extra installs it
from hypothesis import HealthCheck, given, settings  # noqa: E402  # after the importorskip above
from schemathesis.generation import GenerationMode  # noqa: E402

EXAMPLES = 20
"""Generated requests per operation and mode (valid, invalid): about 170 in all."""
DELIBERATE = {502, 503, 504}
PATHS = ["/v1/responses", "/responses", "/invocations", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def base_url(docs_index: str) -> Iterator[str]:
    """The real agent behind the app, no auth."""
    agent = build_agent({"retriever": {"index": docs_index, "k": 3}})
    with serve_in_thread(build_app(agent, api_token="")) as url:
        yield url


@pytest.mark.slow
@pytest.mark.usefixtures("tracing_off")  # the server's answers are under test here, not its traces
def test_generated_requests_get_no_server_errors(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            label = operation.label

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:  # Any: schemathesis' Case
                nonlocal calls
                calls += 1
                response = case.call(base_url=base_url, timeout=30)
                if response.status_code >= 500 and response.status_code not in DELIBERATE:
                    failures.append(f"{label} {response.status_code}: {response.text[:200]}")  # noqa: B023

            call()
    assert calls > 80  # the schema really documents bodies to generate from
    assert failures == []


def _nested(depth: int) -> bytes:
    return b'{"input": "hi", "custom_inputs": {"a": ' + b'{"b": ' * depth + b"1" + b"}" * depth + b"}}"


def _body(value: bytes) -> bytes:
    return b'{"input": "hi", "temperature": ' + value + b"}"


HOSTILE = {
    "custom_inputs nested 300 deep": _nested(300),
    "arrays nested 100 deep": b'{"input": ' + b"[" * 100 + b"]" * 100 + b"}",
    "arrays nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "an int of 5000 digits": _body(b"9" * 5000),
    "an int of 400 digits": _body(b"9" * 400),
    "a float beyond a double": _body(b"1e400"),
    "NaN": _body(b"NaN"),
    "Infinity": _body(b"-Infinity"),
    "input of the wrong type": b'{"input": 5}',
    "messages of the wrong type": b'{"messages": "hello", "input": {"a": 1}}',
    "stream of the wrong type": b'{"input": "hi", "messages": [], "stream": "yes"}',
    "invalid UTF-8": b'{"input": "\xff\xfe\xfa"}',
    "an unpaired surrogate": b'{"input": "\\ud800", "messages": [{"role": "user", "content": "\\udfff"}]}',
    "an empty body": b"",
    "only spaces": b"   \n ",
    "a JSON array": b"[1, 2]",
    "a JSON string": b'"hello"',
    "JSON null": b"null",
    "trailing garbage": b'{"input": "hi"} trailing',
    "a truncated object": b'{"input": "hi", ',
}


@pytest.mark.parametrize("path", PATHS)
def test_hostile_bodies_get_a_400_and_one_log_line(
    base_url: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragworks")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for name, body in HOSTILE.items():
            caplog.clear()
            response = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, f"{name}: {response.status_code} {response.text[:300]}"
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and 20 < len(error["message"]) < 2000, name
            assert not any(r.exc_info for r in caplog.records), name
            assert sum(len(r.getMessage()) for r in caplog.records) < 2000, name
        assert client.get("/health").json() == {"status": "healthy"}
