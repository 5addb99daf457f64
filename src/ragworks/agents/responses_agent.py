"""`RagResponsesAgent`: an MLflow `ResponsesAgent` over a compiled ragworks graph.

`predict_stream` turns the graph's events into Responses stream events; `predict` is the reduction
of the same events with token streaming off (the model is invoked once), so there is one code path.
MLflow wraps both methods in an AGENT span (the trace root); the graph's nodes add the RETRIEVER,
CHAT_MODEL and TOOL spans below it.

Token usage, summed over the run's model calls, is the response's `usage` in `predict`, and an extra
top-level `usage` field (the same dict) of the final answer's `response.output_item.done` event in
`predict_stream`. It is absent when the model reported no usage.

Example:
    >>> agent = build_agent({"retriever": {"type": "local", "index": "./index"}})   # doctest: +SKIP
    >>> request = {"input": [{"role": "user", "content": "What is ragworks?"}]}
    >>> response = agent.predict(request)  # doctest: +SKIP
    >>> response.custom_outputs["sources"][0]["source"]                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from ragworks.agents._messages import responses_items_to_messages
from ragworks.agents._run import AgentEvent, TextDelta, TextDone, ToolCallEvent, ToolResultEvent, run_graph
from ragworks.agents._thread import Thread, run_config, thread_of, turn_inputs
from ragworks.agents.prompt_registry import link_to_trace
from ragworks.agents.tracing import AGENT_TAG, CONFIG_TAG, annotate_trace
from ragworks.config import AgentConfig

if TYPE_CHECKING:
    from mlflow.entities.model_registry import PromptVersion


def responses_usage(usage: UsageMetadata) -> dict[str, Any]:
    """LangChain token usage as a Responses `usage` value (MLflow's `ResponseUsage` fields)."""
    # Any: the two detail fields are nested dicts of ints
    cached = (usage.get("input_token_details") or {}).get("cache_read", 0)
    reasoning = (usage.get("output_token_details") or {}).get("reasoning", 0)
    return {
        "input_tokens": usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage["total_tokens"],
    }


def reduce_stream(events: Iterable[ResponsesAgentStreamEvent | dict[str, Any]]) -> ResponsesAgentResponse:
    """Fold stream events into a response: the done items in order, the merged custom outputs, usage."""
    output: list[Any] = []
    custom: dict[str, Any] = {}
    usage: dict[str, Any] | None = None
    for event in events:
        data = event if isinstance(event, dict) else event.model_dump(exclude_none=True)
        if data.get("type") == "response.output_item.done":
            output.append(data["item"])
            usage = data.get("usage") or usage
        custom.update(data.get("custom_outputs") or {})
    return ResponsesAgentResponse.model_validate(
        {"output": output, "custom_outputs": custom or None, "usage": usage}
    )


class RagResponsesAgent(ResponsesAgent):
    """A ragworks graph behind MLflow's Responses API: `predict` and `predict_stream`."""

    def __init__(
        self,
        graph: CompiledStateGraph,
        *,
        config: AgentConfig | None = None,
        prompts: Sequence[PromptVersion] = (),
    ) -> None:
        self.graph = graph
        self.config = config
        self.prompts = list(prompts)
        """The registry prompt versions the graph uses; each request's trace is linked to them."""
        self.stateful_graph: CompiledStateGraph | None = None
        """The same graph compiled with a checkpointer (see `with_checkpointer`); None: no state kept."""

    def with_checkpointer(self, checkpointer: BaseCheckpointSaver[Any]) -> RagResponsesAgent:
        """This agent, also able to run requests that name a conversation thread (`agents._thread`).

        Requests without a thread still run the graph compiled without a checkpointer, unchanged.
        """
        agent = RagResponsesAgent(self.graph, config=self.config, prompts=self.prompts)
        agent.stateful_graph = self.graph.copy(update={"checkpointer": checkpointer})
        return agent

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
        messages = responses_items_to_messages(items)
        thread = thread_of(request.custom_inputs) if self.stateful_graph is not None else None
        if thread is None:
            events = run_graph(self.graph, messages, stream=stream)
        else:
            events = self._thread_events(thread, messages, stream=stream)
        for event in events:
            yield ResponsesAgentStreamEvent(**self._to_stream_event(event))

    def _thread_events(
        self, thread: Thread, messages: list[BaseMessage], *, stream: bool
    ) -> Iterator[AgentEvent]:
        """A run on a conversation thread: checkpointed, or (not kept) on its earlier turns read back."""
        graph = self.stateful_graph
        assert graph is not None
        if thread.keep:
            inputs = turn_inputs(thread, messages)
            config = run_config(thread)
            # "exit": one checkpoint write per turn, not one per node
            return run_graph(graph, messages, config=config, stream=stream, inputs=inputs, durability="exit")
        earlier: list[BaseMessage] = []
        if thread.checkpoint_id:
            earlier = list(graph.get_state(run_config(thread)).values.get("messages", []))
        return run_graph(self.graph, [*earlier, *messages], stream=stream)

    def _annotate(self, request: ResponsesAgentRequest) -> None:
        context = request.context
        tags = {CONFIG_TAG: self.config.fingerprint(), AGENT_TAG: self.config.agent} if self.config else None
        annotate_trace(
            session_id=context.conversation_id if context else None,
            user_id=context.user_id if context else None,
            tags=tags,
        )
        link_to_trace(self.prompts)

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
                if event.usage:
                    done["usage"] = responses_usage(event.usage)
            return done
        if isinstance(event, ToolCallEvent):
            item = self.create_function_call_item(event.item_id, event.call_id, event.name, event.arguments)
        else:
            assert isinstance(event, ToolResultEvent)
            item = self.create_function_call_output_item(event.call_id, event.output)
        return {"type": "response.output_item.done", "item": item}
