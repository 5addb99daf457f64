"""`POST /v1/feedback`: a person's verdict on an answer, stored as an MLflow feedback assessment on its trace.

    {"response_id": "resp_...", "value": true, "comment": "cited the wrong page", "user": "ada"}

`response_id` (the `id` of an answer, Responses `resp_...` or chat completion `chatcmpl-...`, which
its trace carries as the tag `ragworks.response_id`) or `trace_id` (from `x-mlflow-return-trace-id:
true`) names the answer, exactly one of them. `value` is true, false or a finite number. The
assessment is named `user_feedback`, its source is HUMAN with `user` as the source id ("anonymous"
without one) and `comment` as the rationale.

Answers: 200 with the assessment's id; 400 for a malformed body; 404 when no stored trace has that id;
409 when traces are still waiting to be stored (retry after `Retry-After`); 502 when the tracking
store fails. A `ResponseIndex` (the conversation store, when the server keeps one) is asked first.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio.to_thread
import mlflow
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlflow.entities import AssessmentSource
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragworks.serving._feedback_lookup import Lookup, find_trace
from ragworks.serving.errors import HTTPProblem, handle_error

FEEDBACK_PATH = "/v1/feedback"
FEEDBACK_NAME = "user_feedback"
"""The name of the assessment each feedback is stored as."""
ANONYMOUS = "anonymous"
MAX_VALUE = 1e15
"""Largest magnitude of a numeric value (ratings and scores are small; this keeps floats exact)."""


class FeedbackRequest(BaseModel):
    """The body of `POST /v1/feedback`."""

    model_config = ConfigDict(extra="forbid")

    response_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="The `id` of an answer (resp_, chatcmpl-)."
    )
    trace_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="The answer's MLflow trace id."
    )
    value: bool | int | float = Field(description="true (good), false (bad), or a finite number (a rating).")
    comment: str | None = Field(default=None, max_length=10_000, description="Why; stored as the rationale.")
    user: str | None = Field(
        default=None, min_length=1, max_length=256, description="Who; the assessment's source id."
    )

    @field_validator("value", mode="before")
    @classmethod
    def _true_false_or_number(cls, value: Any) -> Any:  # Any: any JSON value arrives here
        if isinstance(value, bool):
            return value
        # abs() first: comparing a huge int to a float is exact, converting it would overflow;
        # NaN and the infinities fail the comparison.
        if isinstance(value, (int, float)) and abs(value) <= MAX_VALUE:
            return value
        raise ValueError(f"must be true, false or a finite number of magnitude up to {MAX_VALUE:g}")

    @model_validator(mode="after")
    def _one_id(self) -> FeedbackRequest:
        if (self.response_id is None) == (self.trace_id is None):
            raise ValueError("give exactly one of response_id (a Responses answer's id) or trace_id")
        return self


class FeedbackRecorded(BaseModel):
    """The answer of `POST /v1/feedback`: the assessment that was stored."""

    object: str = "feedback"
    id: str = Field(description="The MLflow assessment id.")
    trace_id: str
    response_id: str | None = None
    name: str = FEEDBACK_NAME
    value: bool | int | float


class ResponseIndex(Protocol):
    """Knows the trace of a response it stored (the conversation store); None when it does not."""

    def trace_id_for_response(self, response_id: str) -> str | None:
        """The trace id recorded with `response_id`."""
        ...


def parse_feedback(raw: bytes) -> FeedbackRequest:
    """Validate the body once; a malformed one is a 400 that says which field and why."""
    try:
        return FeedbackRequest.model_validate_json(raw)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            parts.append(f"{where}: {err.get('msg')}")
        message = f'Invalid feedback: {"; ".join(parts)}. Send {{"response_id": ..., "value": true}}.'
        raise HTTPProblem(400, message, code="invalid_request") from None


def record_feedback(trace_id: str, body: FeedbackRequest) -> str:
    """Store the feedback on the trace; return the assessment id."""
    source = AssessmentSource(source_type="HUMAN", source_id=body.user or ANONYMOUS)
    try:
        assessment = mlflow.log_feedback(
            trace_id=trace_id, name=FEEDBACK_NAME, value=body.value, source=source, rationale=body.comment
        )
    except MlflowException as exc:
        raise HTTPProblem(
            502, f"The tracking store did not record the feedback: {exc.message}", code="tracking_store_error"
        ) from exc
    return str(assessment.assessment_id)


def _not_found(body: FeedbackRequest, lookup: Lookup) -> HTTPProblem:
    named = f"response {body.response_id!r}" if body.response_id else f"trace {body.trace_id!r}"
    if lookup.outcome == "pending":
        return HTTPProblem(
            409,
            f"No stored trace for {named} yet: this server's traces are still being stored. Retry shortly.",
            code="trace_not_stored_yet",
            headers={"Retry-After": "2"},
        )
    return HTTPProblem(
        404,
        f"No stored trace for {named} in this server's experiment. Name a response this server answered "
        "(its `id`) or a trace id; an answer of the last few seconds may not be stored yet, so retry.",
        code="not_found",
    )


async def _resolve(body: FeedbackRequest, *, index: ResponseIndex | None, wait_s: float | None) -> str:
    """The stored trace the feedback names: through `index` first (when it knows the response), else by
    the response id tag. Either way it must be stored already (or soon: `find_trace` waits, bounded)."""
    trace_id, response_id = body.trace_id, body.response_id
    if index is not None and body.response_id is not None:
        asked = body.response_id
        known = await anyio.to_thread.run_sync(lambda: index.trace_id_for_response(asked))
        if known is not None:
            trace_id, response_id = known, None
    lookup = await find_trace(trace_id=trace_id, response_id=response_id, wait_s=wait_s)
    if lookup.trace_id is None:
        raise _not_found(body, lookup)
    return lookup.trace_id


def _served_index(app: FastAPI) -> ResponseIndex | None:
    """The conversation store of the app's runtime (`app.state.ragworks.state`), when it keeps one."""
    store = getattr(getattr(app.state, "ragworks", None), "state", None)
    return store if callable(getattr(store, "trace_id_for_response", None)) else None


def add_feedback_routes(
    app: FastAPI, *, index: ResponseIndex | None = None, wait_s: float | None = None
) -> None:
    """Add `POST /v1/feedback` to `app`.

    Args:
        app: The server's app.
        index: Asked first for a response's trace; None: the app runtime's conversation store, if any.
        wait_s: How long an id is looked for while traces may still be on their way to the store
            (`_feedback_lookup.WAIT_S` when None).
    """

    async def feedback(request: Request) -> JSONResponse:
        try:
            body = parse_feedback(await request.body())
            trace_id = await _resolve(body, index=index or _served_index(app), wait_s=wait_s)
            assessment_id = await anyio.to_thread.run_sync(lambda: record_feedback(trace_id, body))
        except Exception as exc:
            return handle_error(request, exc)
        recorded = FeedbackRecorded(
            id=assessment_id, trace_id=trace_id, response_id=body.response_id, value=body.value
        )
        return JSONResponse(recorded.model_dump())

    app.add_api_route(FEEDBACK_PATH, feedback, methods=["POST"], **_documented())


def _documented() -> dict[str, Any]:
    """`add_api_route` arguments documenting the route's body and answers in /openapi.json."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    statuses = {
        "400": "Malformed: not JSON, a wrong type, both ids or neither.",
        "401": "Missing or wrong bearer token (when the server has one).",
        "404": "No stored trace has that response or trace id.",
        "409": "This server's traces are still being stored; retry after Retry-After.",
        "413": "The body is larger than the server's limit.",
        "502": "The tracking store failed.",
    }
    return {
        "summary": "Record a person's feedback on an answer (an MLflow assessment on its trace)",
        "operation_id": "create_feedback",
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": FeedbackRequest.model_json_schema()}},
            }
        },
        "responses": {
            200: {
                "description": "Stored.",
                "content": {"application/json": {"schema": FeedbackRecorded.model_json_schema()}},
            },
            **{code: {"description": text, **error} for code, text in statuses.items()},
        },
        "response_model": None,
    }


__all__ = ["FEEDBACK_NAME", "FEEDBACK_PATH", "FeedbackRequest", "ResponseIndex", "add_feedback_routes"]
