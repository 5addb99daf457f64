"""A LangChain chat model over the `openai` client, for any OpenAI-compatible chat-completions server.

Streaming, tool calling (`bind_tools`), token usage, and retries on 429 / 5xx / connection errors
(the `openai` client's own backoff; requests are retried before any token is streamed, never after).
Failures become `ModelError`s that say what to check. The API key is resolved on first use and is
never part of the model's repr, its identifying params, or a trace.

Example:
    >>> model = OpenAIChatModel(model_name="gpt-4o-mini", client_factory=make_openai_client)  # doctest: +SKIP
    >>> model.invoke("Say hi").content                                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import openai
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

from ragworks.agents._messages import message_to_dict
from ragworks.errors import ModelError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class OpenAIChatModel(BaseChatModel):
    """Chat completions through the `openai` client; `client_factory` decides the server and the key."""

    model_name: str
    """The model (OpenAI) or serving endpoint (Databricks) name."""
    client_factory: Callable[[], openai.OpenAI] = Field(exclude=True, repr=False)
    """Builds the client on first use, so keys are read only when a call is made."""
    provider: str = "openai"
    """Shown in errors and traces: `openai` or `databricks`."""
    temperature: float | None = None
    max_tokens: int | None = None
    stream_usage: bool = True
    """Ask for token usage on streams (`stream_options.include_usage`)."""
    _client: openai.OpenAI | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return f"ragworks-{self.provider}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "provider": self.provider, "temperature": self.temperature}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI's function format; `tool_choice` may be auto, none, required/any or a name."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice in ("any", "required"):
            kwargs["tool_choice"] = "required"
        elif tool_choice in ("auto", "none"):
            kwargs["tool_choice"] = tool_choice
        elif tool_choice:
            kwargs["tool_choice"] = {"type": "function", "function": {"name": tool_choice}}
        return super().bind(tools=formatted, **kwargs)

    def _client_once(self) -> openai.OpenAI:
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def _params(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model_name, "messages": [_to_openai(m) for m in messages]}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if stop:
            params["stop"] = stop
        params.update({k: v for k, v in kwargs.items() if k in ("tools", "tool_choice")})
        return params

    def _call(self, fn: Callable[[openai.OpenAI], T]) -> T:
        try:
            return fn(self._client_once())
        except openai.APIError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: openai.APIError) -> ModelError:
        where = f"{self.provider} model {self.model_name!r}"
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            hint = (
                "DATABRICKS_TOKEN / your Databricks profile"
                if self.provider == "databricks"
                else "OPENAI_API_KEY"
            )
            return ModelError(f"The {where} rejected the credentials ({exc.status_code}). Check {hint}.")
        if isinstance(exc, openai.NotFoundError):
            return ModelError(f"The {where} was not found (404). Check the name after '{self.provider}:'.")
        if isinstance(exc, openai.RateLimitError):
            return ModelError(
                f"The {where} is rate limited (429) even after retries. Wait, or lower concurrency."
            )
        if isinstance(exc, openai.APIConnectionError):
            hint = "DATABRICKS_HOST" if self.provider == "databricks" else "OPENAI_BASE_URL"
            return ModelError(f"Cannot reach the {where}: {exc}. Check {hint} and the network.")
        if isinstance(exc, openai.APIStatusError):
            return ModelError(f"The {where} failed with HTTP {exc.status_code}: {exc.message}")
        return ModelError(f"The {where} failed: {exc}")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        params = self._params(messages, stop, **kwargs)
        logger.info("Chat completion: %s %s", self.provider, self.model_name)
        response = self._call(lambda c: c.chat.completions.create(**params))
        if not response.choices:
            raise ModelError(f"The {self.provider} model {self.model_name!r} returned no choices.")
        choice = response.choices[0]
        message = AIMessage(
            content=choice.message.content or "",
            tool_calls=_tool_calls(choice.message.tool_calls),
            id=response.id,
            usage_metadata=_usage(response.usage),
            response_metadata={"model_name": response.model, "finish_reason": choice.finish_reason},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params = self._params(messages, stop, **kwargs) | {"stream": True}
        if self.stream_usage:
            params["stream_options"] = {"include_usage": True}
        logger.info("Chat completion (stream): %s %s", self.provider, self.model_name)
        stream = self._call(lambda c: c.chat.completions.create(**params))
        try:
            for chunk in stream:
                message = _chunk_message(chunk)
                if run_manager and message.content:
                    run_manager.on_llm_new_token(
                        str(message.content), chunk=ChatGenerationChunk(message=message)
                    )
                yield ChatGenerationChunk(message=message)
        except openai.APIError as exc:
            raise self._error(exc) from exc
        yield ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last"))


def _to_openai(message: BaseMessage) -> dict[str, Any]:
    out = message_to_dict(message)
    if out.get("tool_calls") and not out["content"]:
        out["content"] = None  # some servers reject "" next to tool calls
    return out


def _tool_calls(calls: Any) -> list[Any]:
    # Any: the openai SDK's tool-call classes differ across versions; only id/function are read.
    out = []
    for call in calls or []:
        try:
            args = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            args = {"__raw__": call.function.arguments}
        out.append({"name": call.function.name, "args": args, "id": call.id, "type": "tool_call"})
    return out


def _usage(usage: Any) -> UsageMetadata | None:
    # Any: CompletionUsage from the openai SDK, or None when the server does not report usage.
    if usage is None:
        return None
    n_in, n_out = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    return {
        "input_tokens": n_in,
        "output_tokens": n_out,
        "total_tokens": int(usage.total_tokens or n_in + n_out),
    }


def _chunk_message(chunk: Any) -> AIMessageChunk:
    # Any: ChatCompletionChunk from the openai SDK.
    usage = _usage(getattr(chunk, "usage", None))
    if not chunk.choices:
        return AIMessageChunk(content="", id=chunk.id, usage_metadata=usage)
    choice = chunk.choices[0]
    delta = choice.delta
    tool_chunks = [
        tool_call_chunk(
            name=tc.function.name if tc.function else None,
            args=tc.function.arguments if tc.function else None,
            id=tc.id,
            index=tc.index,
        )
        for tc in (delta.tool_calls or [])
    ]
    metadata = (
        {"finish_reason": choice.finish_reason, "model_name": chunk.model} if choice.finish_reason else {}
    )
    return AIMessageChunk(
        content=delta.content or "",
        id=chunk.id,
        tool_call_chunks=tool_chunks,
        usage_metadata=usage,
        response_metadata=metadata,
    )
