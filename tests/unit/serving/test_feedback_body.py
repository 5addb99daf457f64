"""The feedback body: exactly one id, a value that is true, false or a finite number; the lookup's bounds."""

from __future__ import annotations

import asyncio

import pytest
from mlflow.tracing import provider

from ragworks.serving import _feedback_lookup
from ragworks.serving.errors import HTTPProblem
from ragworks.serving.feedback import FeedbackRequest, parse_feedback


@pytest.mark.parametrize("value", [True, False, 0, 5, -1, 0.75, 1e15])
def test_true_false_and_finite_numbers_are_kept_as_sent(value: bool | float) -> None:
    body = parse_feedback(f'{{"response_id": "resp_1", "value": {str(value).lower()}}}'.encode())
    assert body.value == value and type(body.value) is type(value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"response_id": "resp_1", "value": "true"}',
        b'{"response_id": "resp_1", "value": 1e16}',
        b'{"response_id": "resp_1", "value": {"score": 1}}',
        b'{"response_id": "resp_1", "trace_id": "tr-1", "value": 1}',
        b'{"value": 1}',
    ],
)
def test_malformed_bodies_are_400s_naming_the_field(raw: bytes) -> None:
    with pytest.raises(HTTPProblem) as caught:
        parse_feedback(raw)
    assert caught.value.status == 400 and "Invalid feedback" in str(caught.value)


def test_the_schema_names_every_field() -> None:
    schema = FeedbackRequest.model_json_schema()
    assert set(schema["properties"]) == {"response_id", "trace_id", "value", "comment", "user"}
    assert schema["required"] == ["value"]


def test_mlflows_tracing_switch_is_found() -> None:
    # The fallback ("always on") would make feedback wait for traces a server never records.
    assert _feedback_lookup.TRACING_ENABLED is provider.is_tracing_enabled


def test_ids_that_cannot_be_ours_are_unknown_without_a_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_search(**_: object) -> None:
        raise AssertionError("searched")

    monkeypatch.setattr(_feedback_lookup, "stored_trace", no_search)
    for bad in ("x' OR '1'='1", "a" * 129, "sp ace"):
        lookup = asyncio.run(_feedback_lookup.find_trace(response_id=bad))
        assert lookup.outcome == "unknown" and lookup.trace_id is None


@pytest.mark.parametrize(("pending", "bound"), [(False, 1.0), (True, 5.0)])
def test_the_wait_depends_on_what_this_process_still_holds(pending: bool, bound: float) -> None:
    assert _feedback_lookup._bound(pending, 5.0) == bound
    assert _feedback_lookup._bound(None, 0.5) >= 6.0  # MLflow's own exporter holds spans up to 5 s
