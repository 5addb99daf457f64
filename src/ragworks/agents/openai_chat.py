"""A LangChain chat model over the `openai` client, for any OpenAI-compatible chat-completions server.

Streaming, tool calling (`bind_tools`), token usage, and retries on 429 / 5xx / connection errors
and timeouts (requests are retried before any token is streamed, never after). Each attempt's timeout
is `timeout_s` capped by the time left to the request being served (`agents.deadline`); retries stop
when that time cannot cover another attempt, and a stream stops once the request is abandoned.

A reply that is not a whole answer is an error, never a shorter answer: a stream that breaks, sends
a chunk that is not JSON or has no choices (other than the usage chunk), or ends before its finish
reason, and a plain reply that is not a chat completion, all raise a `ModelError` that names the
model (`provider:name`) and carries the HTTP status the server answers (502, 503, 504). The API key
is resolved on first use and is never part of the model's repr, its identifying params, or a trace.

Example:
    >>> model = OpenAIChatModel(model_name="gpt-4o-mini", client_factory=make_openai_client)  # doctest: +SKIP
    >>> model.invoke("Say hi").content                                                        # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
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
from openai import Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import Field, PrivateAttr

from ragworks.agents import deadline
from ragworks.agents._messages import message_to_dict
from ragworks.agents._openai_errors import model_error, retry_after, retryable
from ragworks.errors import ModelError

logger = logging.getLogger(__name__)
T = TypeVar("T")

MIN_ATTEMPT_S = 0.5
"""A retry starts only when at least this long (or all of `timeout_s`, if shorter) is left for it."""
MAX_RETRY_WAIT_S = 30.0
"""A model that asks for a longer wait than this is not retried; its Retry-After goes to the caller."""


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
    timeout_s: float = Field(default=60.0, gt=0)
    """Seconds one attempt may take (per read of a stream), capped by the request's time left."""
    max_retries: int = Field(default=2, ge=0)
    """Further attempts after a retryable failure (429, 5xx, timeouts, connection errors)."""
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

    @property
    def label(self) -> str:
        """The model as a config names it, `provider:name`, for messages."""
        return f"{self.provider}:{self.model_name}"

    def _client_once(self) -> openai.OpenAI:
        if self._client is None:
            # Retries are ours (bounded by the request's deadline), never the client's as well.
            self._client = self.client_factory().with_options(max_retries=0)
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

    def _call(self, fn: Callable[[openai.OpenAI, float], T]) -> T:
        """Run `fn(client, timeout)`, retrying what another attempt may fix while time is left."""
        client = self._client_once()
        for attempt in itertools.count():
            timeout = self._attempt_timeout()
            try:
                return fn(client, timeout)
            except openai.APIError as exc:
                error = model_error(exc, self.label, timeout=timeout)
                wait = self._retry_wait(exc, error, attempt)
                if wait is None:
                    raise error from exc
                logger.warning("%s; retrying in %.2f s (attempt %d)", error, wait, attempt + 2)
                self._sleep(wait)
            except json.JSONDecodeError as exc:
                raise ModelError(
                    f"The model {self.label} answered with a body that is not valid JSON ({exc}).", status=502
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt_timeout(self) -> float:
        left = deadline.remaining()
        if deadline.cancelled():
            raise self._out_of_time("before calling it")
        return self.timeout_s if left is None else min(self.timeout_s, left)

    def _retry_wait(self, exc: openai.APIError, error: ModelError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none to make."""
        if attempt >= self.max_retries or not retryable(exc):
            return None
        asked = error.retry_after
        if asked is None and isinstance(exc, openai.APIStatusError):
            asked = retry_after(exc.response.headers)
        wait = asked if asked is not None else min(4.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2)
        if wait > MAX_RETRY_WAIT_S:
            return None
        left = deadline.remaining()
        if left is not None and left - wait < min(self.timeout_s, MIN_ATTEMPT_S):
            return None  # the request's time cannot cover another attempt
        return wait

    def _sleep(self, seconds: float) -> None:
        """Wait between attempts, giving up as soon as the request is abandoned."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if deadline.cancelled():
                raise self._out_of_time("between retries")
            time.sleep(min(left, 0.05))

    def _out_of_time(self, where: str) -> ModelError:
        return ModelError(
            f"The request's time ran out (or it was cancelled) {where} of the model {self.label}; "
            "the call was stopped.",
            status=504,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        params = self._params(messages, stop, **kwargs)
        logger.info("Chat completion: %s %s", self.provider, self.model_name)
        response = self._call(lambda c, t: c.chat.completions.create(**params, timeout=t))
        return ChatResult(generations=[ChatGeneration(message=self._reply_message(response))])

    def _reply_message(self, response: Any) -> AIMessage:
        # Any: a ChatCompletion when the server kept to the API; anything else is reported, not parsed.
        if not isinstance(response, ChatCompletion):
            raise ModelError(
                f"The model {self.label} answered with something that is not a chat completion: "
                f"{str(response)[:120]!r}. Check that {self.provider}'s base URL points at the API.",
                status=502,
            )
        try:
            if not response.choices:
                raise ModelError(f"The model {self.label} returned no choices.", status=502)
            choice = response.choices[0]
            if getattr(choice, "message", None) is None:
                raise ModelError(f"The model {self.label} returned a choice without a message.", status=502)
            return AIMessage(
                content=choice.message.content or "",
                tool_calls=_tool_calls(choice.message.tool_calls),
                id=response.id,
                usage_metadata=_usage(response.usage),
                response_metadata={"model_name": response.model, "finish_reason": choice.finish_reason},
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise ModelError(f"The model {self.label} returned a malformed reply: {exc}", status=502) from exc

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
        timeouts: list[float] = []

        def create(client: openai.OpenAI, timeout: float) -> Stream[ChatCompletionChunk]:
            timeouts.append(timeout)
            return client.chat.completions.create(**params, timeout=timeout)

        stream = self._call(create)
        check = _StreamCheck(self.label, timeout=timeouts[-1])
        try:
            for chunk in self._chunks(stream, check):
                message = check.message(chunk)
                if run_manager and message.content:
                    run_manager.on_llm_new_token(
                        str(message.content), chunk=ChatGenerationChunk(message=message)
                    )
                yield ChatGenerationChunk(message=message)
        finally:
            stream.close()
        check.finished()
        yield ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last"))

    def _chunks(self, stream: Stream[ChatCompletionChunk], check: _StreamCheck) -> Iterator[Any]:
        """The stream's chunks; a break, an unreadable chunk or an abandoned request raise a ModelError."""
        iterator = iter(stream)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except openai.APIError as exc:
                cause = model_error(exc, self.label, timeout=check.timeout)
                raise check.broken(f"it broke ({cause})", status=cause.status or 502) from exc
            except json.JSONDecodeError as exc:
                raise check.broken(f"it sent a chunk that is not JSON ({exc})", status=502) from exc
            if deadline.cancelled():
                raise self._out_of_time(f"while streaming (after {check.count} chunks)")
            yield chunk


class _StreamCheck:
    """Reads a stream's chunks and says whether it ended as a whole answer."""

    def __init__(self, label: str, *, timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        """The attempt's timeout: the longest wait for each read of the stream."""
        self.count = 0
        self.finish_reason: str | None = None

    def message(self, chunk: Any) -> AIMessageChunk:
        """The chunk as a message; a chunk without choices is allowed only for usage (or Azure's filters)."""
        # Any: ChatCompletionChunk from the openai SDK, built without validation.
        self.count += 1
        try:
            if not chunk.choices and chunk.usage is None and not _filter_results(chunk):
                raise self.broken("it sent a chunk with no choices that is not the usage chunk", status=502)
            message = _chunk_message(chunk)
        except (AttributeError, TypeError, ValueError) as exc:
            raise self.broken(f"it sent a malformed chunk ({exc})", status=502) from exc
        self.finish_reason = message.response_metadata.get("finish_reason") or self.finish_reason
        return message

    def finished(self) -> None:
        """Raise unless the stream said why it ended (a finish reason)."""
        if self.finish_reason is None:
            raise self.broken("it ended before its finish reason and [DONE]")

    def broken(self, what: str, *, status: int = 502) -> ModelError:
        """The error for a stream that did not end as a whole answer."""
        return ModelError(
            f"The stream from {self.label} failed after {self.count} chunks: {what}. "
            "The answer is incomplete; retry the request.",
            status=status,
        )


def _filter_results(chunk: Any) -> bool:
    # Azure OpenAI opens a stream with a chunk that has no choices but its prompt filter results.
    extra = getattr(chunk, "model_extra", None) or {}
    return "prompt_filter_results" in extra


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
