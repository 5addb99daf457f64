"""The agent as the server's worker threads call it: each answer comes back with the id of its trace.

`ServedAgent` wraps any `ResponsesAgent` without tracing anything itself: the agent's own `predict` /
`predict_stream` (wrapped by MLflow in an AGENT span) stay the root of the trace. Run on the worker
thread, it reads that trace's id from MLflow (`get_last_active_trace_id(thread_local=True)`, public)
right after the agent returns, and closes abandoned streams so their traces end (see `_abandon`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from types import GeneratorType
from typing import Any

import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse
from pydantic import Field

from ragworks.serving._abandon import close_abandoned, end_cancelled

ABANDONED = "the stream was stopped before it finished (the client left, or the request timed out)"


class ServedResponse(ResponsesAgentResponse):
    """The agent's answer plus the id of the trace that recorded it (never serialised)."""

    trace_id: str | None = Field(default=None, exclude=True)


@dataclass(frozen=True, slots=True)
class TraceEnd:
    """The last item of a served stream: the trace id of the agent's run (None when not traced)."""

    trace_id: str | None


class ServedAgent:
    """Call `agent` on a worker thread and report the trace of each call."""

    def __init__(self, agent: ResponsesAgent) -> None:
        self.agent = agent

    def predict(self, request: ResponsesAgentRequest) -> ServedResponse:
        """The agent's answer (validated as a ResponsesAgentResponse if it returned a dict)."""
        answer: Any = self.agent.predict(request)  # Any: agents may return a dict
        response = answer if isinstance(answer, ResponsesAgentResponse) else _as_response(answer)
        values = {name: getattr(response, name) for name in ResponsesAgentResponse.model_fields}
        return ServedResponse.model_construct(
            _fields_set=set(response.model_fields_set), **values, trace_id=_trace_id()
        )

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[Any, None, None]:
        """The agent's events, then a `TraceEnd`; closing it part-way ends the agent's trace as cancelled."""
        events: Iterable[Any] = self.agent.predict_stream(request)
        iterator = iter(events)
        try:
            for event in iterator:  # noqa: UP028  # `yield from` would close the agent's stream first
                yield event
        except GeneratorExit:
            if isinstance(iterator, GeneratorType):
                close_abandoned(iterator, reason=ABANDONED)
            raise
        except BaseException:
            yield TraceEnd(_trace_id())  # the failed run's trace, ended by MLflow with the error
            raise
        yield TraceEnd(_trace_id())


    def record_unrun(self, request: ResponsesAgentRequest, reason: str, *, stream: bool) -> None:
        """Record a request the agent never ran: one trace, its AGENT root ended as cancelled.

        Named and shaped like the span MLflow opens around `predict` / `predict_stream`, so a
        request dropped before it started (the client left, or it waited past its deadline)
        is found like any other, with the request id, session and user of its `trace_scope`.
        """
        span = mlflow.start_span_no_context(
            name="predict_stream" if stream else "predict",
            span_type=SpanType.AGENT,
            inputs={"request": request.model_dump(exclude_none=True)},
        )
        end_cancelled(span, reason)


def _as_response(answer: Any) -> ResponsesAgentResponse:
    return ResponsesAgentResponse.model_validate(answer)


def _trace_id() -> str | None:
    """The trace the agent's call just ended on this thread (the worker's own context)."""
    return mlflow.get_last_active_trace_id(thread_local=True)
