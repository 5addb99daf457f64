"""`ragworks serve` hands uvicorn the header deadline and a socket cap, for one process and for workers."""

from __future__ import annotations

import json

import pytest
from uvicorn.importer import import_from_string

from ragworks.serving import _header_deadline
from ragworks.serving.app import SPEC_ENV, ServeSpec
from ragworks.serving.limits import ServingLimits
from ragworks.serving.server import _connection_options


def test_one_process_gets_the_header_deadline_and_a_socket_cap() -> None:
    limits = ServingLimits(body_timeout_s=3.0, max_concurrency=8, max_body_readers=40)
    options = _connection_options(limits)
    assert options["http"] is _header_deadline.http_protocol(3.0)
    assert not isinstance(options["http"], str)  # the deadline protocol, not uvicorn's "auto"
    assert options["limit_concurrency"] == 2 * (40 + 8)


def test_workers_import_the_protocol_for_their_spec_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ServeSpec(limits={"body_timeout_s": 2.5, "timeout_s": 30.0})
    monkeypatch.setenv(SPEC_ENV, spec.to_json())
    protocol = import_from_string(_header_deadline.FOR_WORKERS)
    assert protocol is _header_deadline.http_protocol(2.5)
    monkeypatch.setenv(SPEC_ENV, json.dumps({"limits": {"body_timeout_s": 50.0, "timeout_s": 4.0}}))
    assert import_from_string(_header_deadline.FOR_WORKERS) is _header_deadline.http_protocol(4.0)
