"""`RagResponsesAgent`: an MLflow `ResponsesAgent` over a compiled ragworks graph.

`predict_stream` turns the graph's events into Responses stream events; `predict` is the reduction
of the same events with token streaming off (the model is invoked once), so there is one code path.
MLflow wraps both methods in an AGENT span (the trace root); the graph's nodes add the RETRIEVER,
CHAT_MODEL and TOOL spans below it.

Example:
    >>> agent = build_agent({"retriever": {"type": "local", "index": "./index"}})   # doctest: +SKIP
    >>> request = {"input": [{"role": "user", "content": "What is ragworks?"}]}
    >>> response = agent.predict(request)  # doctest: +SKIP
    >>> response.custom_outputs["sources"][0]["source"]                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from ragworks.agents._messages import responses_items_to_messages
from ragworks.agents._run import AgentEvent, TextDelta, TextDone, ToolCallEvent, ToolResultEvent, run_graph
from ragworks.agents.tracing import AGENT_TAG, CONFIG_TAG, annotate_trace
from ragworks.config import AgentConfig


def reduce_stream(events: Iterable[ResponsesAgentStreamEvent | dict[str, Any]]) -> ResponsesAgentResponse:
    """Fold stream events into a response: the done items in order, plus the merged custom outputs."""
    output: list[Any] = []
    custom: dict[str, Any] = {}
    for event in events:
        data = event if isinstance(event, dict) else event.model_dump(exclude_none=True)
        if data.get("type") == "response.output_item.done":
            output.append(data["item"])
        custom.update(data.get("custom_outputs") or {})
    return ResponsesAgentResponse(output=output, custom_outputs=custom or None)


class RagResponsesAgent(ResponsesAgent):
    """A ragworks graph behind MLflow's Responses API: `predict` and `predict_stream`."""

    def __init__(self, graph: CompiledStateGraph, *, config: AgentConfig | None = None) -> None:
        self.graph = graph
        self.config = config

    @staticmethod
    def responses_agent_output_reducer(
        chunks: list[ResponsesAgentStreamEvent | dict[str, Any]],
    ) -> dict[str, Any]:
        """Trace output of `predict_stream`: like MLflow's reducer, but keeping `custom_outputs`."""
        return reduce_stream(chunks).model_dump(exclude_none=True)

    def predict(  # type: ignore[override]  # ResponsesAgent's signature, not PythonModel's
        self, request: ResponsesAgentRequest
    ) -> ResponsesAgentResponse:
        """Answer a request; the reduction of `predict_stream`'s events, without token streaming."""
        return reduce_stream(self._events(request, stream=False))

    def predict_stream(  # type: ignore[override]  # ResponsesAgent's signature, not PythonModel's
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        """Stream text deltas as the model writes, then each finished output item."""
        yield from self._events(request)

    def _events(
        self, request: ResponsesAgentRequest, *, stream: bool = True
    ) -> Iterator[ResponsesAgentStreamEvent]:
        self._annotate(request)
        items = [i if isinstance(i, dict) else i.model_dump(exclude_none=True) for i in request.input]
        for event in run_graph(self.graph, responses_items_to_messages(items), stream=stream):
            yield ResponsesAgentStreamEvent(**self._to_stream_event(event))

    def _annotate(self, request: ResponsesAgentRequest) -> None:
        context = request.context
        tags = {CONFIG_TAG: self.config.fingerprint(), AGENT_TAG: self.config.agent} if self.config else None
        annotate_trace(
            session_id=context.conversation_id if context else None,
            user_id=context.user_id if context else None,
            tags=tags,
        )

    def _to_stream_event(self, event: AgentEvent) -> dict[str, Any]:
        if isinstance(event, TextDelta):
            return self.create_text_delta(event.delta, event.item_id)
        if isinstance(event, TextDone):
            done: dict[str, Any] = {
                "type": "response.output_item.done",
                "item": self.create_text_output_item(event.text, event.item_id),
            }
            if event.final:
                done["custom_outputs"] = {"sources": event.sources}
            return done
        if isinstance(event, ToolCallEvent):
            item = self.create_function_call_item(event.item_id, event.call_id, event.name, event.arguments)
        else:
            assert isinstance(event, ToolResultEvent)
            item = self.create_function_call_output_item(event.call_id, event.output)
        return {"type": "response.output_item.done", "item": item}
