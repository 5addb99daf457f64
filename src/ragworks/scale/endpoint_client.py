"""A deployed agent, talked to through its serving endpoint's OpenAI-compatible Responses route.

`EndpointAgent(name)` has the `predict` / `predict_stream` shape the CLI's chat loop and the eval
runner take, so `ragworks chat --endpoint NAME` and `ragworks eval SUITE --endpoint NAME` run the
same code as for a local agent. Requests go to `{host}/serving-endpoints/responses` with the
endpoint as the `model` (as `WorkspaceClient().serving_endpoints.get_open_ai_client()` sends them),
authenticated by databricks-sdk's unified auth with a token read per request; `chat` streams the
answer's events as the endpoint sends them. The answer's `custom_outputs` (a ragworks agent's
`sources`) come back with it, so the cited sources show and the retrieval metrics score.

Example:
    >>> agent = EndpointAgent("rag-agent")                                       # doctest: +SKIP
    >>> agent.predict({"input": [{"role": "user", "content": "What is BM25?"}]})["output"]
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from ragworks.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)


class EndpointAgent:
    """A Model Serving endpoint as an agent: `predict(request)` and `predict_stream(request)`."""

    def __init__(
        self,
        endpoint: str,
        *,
        client_factory: Callable[[], Any] | None = None,  # Any: an openai.OpenAI
        timeout_s: float = 120.0,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._factory = client_factory
        self._client: Any = None

    def _openai(self) -> Any:  # Any: openai.OpenAI, made on first use
        if self._client is None:
            from ragworks.models import make_databricks_client

            self._client = (self._factory or make_databricks_client)()
        return self._client

    def predict(self, request: Any) -> dict[str, Any]:  # Any: a request dict or a ResponsesAgentRequest
        """One answer as Responses JSON (`output` items, and `custom_outputs` when the agent sends them).

        Raises:
            ModelError: the endpoint refused or failed the request, or could not be reached.
        """
        response = self._call(request, stream=False)
        return cast(dict[str, Any], response.model_dump(exclude_none=True))

    def predict_stream(self, request: Any) -> Iterator[dict[str, Any]]:  # Any: as for predict
        """The answer as the endpoint streams it: Responses events as dicts (text deltas, items).

        Raises:
            ModelError: as `predict`, also when the stream breaks.
        """
        with self._errors():
            for event in self._call(request, stream=True):
                yield cast(dict[str, Any], event.model_dump(exclude_none=True))

    def _call(self, request: Any, *, stream: bool) -> Any:  # Any: a Response or a Stream of events
        body = _request_dict(request)
        extra = {k: v for k, v in body.items() if k not in ("input", "stream")}
        logger.info("Serving endpoint %s: responses request (stream=%s)", self.endpoint, stream)
        with self._errors():
            return self._openai().responses.create(
                model=self.endpoint,
                input=body.get("input") or [],
                stream=stream,
                extra_body=extra or None,
                timeout=self.timeout_s,
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """The openai client's errors as ModelErrors with the endpoint's own message."""
        import openai

        try:
            yield
        except openai.APIStatusError as exc:
            raise ModelError(
                f"Serving endpoint {self.endpoint!r} answered {exc.status_code}: {_message(exc)}",
                status=503 if exc.status_code in (429, 503) else 502,
            ) from None
        except openai.APIError as exc:  # connection errors, timeouts, a broken stream
            raise ModelError(
                f"Serving endpoint {self.endpoint!r} failed ({_message(exc)}); check DATABRICKS_HOST.",
                status=502,
            ) from None


def _request_dict(request: Any) -> dict[str, Any]:
    dump = getattr(request, "model_dump", None)
    if callable(dump):
        return cast(dict[str, Any], dump(exclude_none=True))
    if isinstance(request, Mapping):
        return dict(request)
    raise ConfigError(f"A serving endpoint takes a Responses request, not {type(request).__name__}.")


def _message(exc: Any) -> str:
    """The endpoint's own error message (Databricks' `message`, or OpenAI's `error.message`)."""
    body: dict[str, Any] = exc.body if isinstance(getattr(exc, "body", None), dict) else {}
    error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
    text = error.get("message") or getattr(exc, "message", "") or str(exc)
    return " ".join(str(text).split())


def endpoint_target(endpoint: str, *, other: object = None) -> EndpointAgent:
    """`ragworks eval --endpoint`: the endpoint as the eval target; refused beside another target."""
    if other is not None:
        raise ConfigError("Pass --endpoint alone, not with --config or --model-uri.")
    return EndpointAgent(endpoint)


def chat_with_endpoint(endpoint: str, question: str | None, *, tracing_asked: bool) -> None:
    """`ragworks chat --endpoint`: one question, or a conversation, with the deployed agent."""
    from ragworks.agents import commands

    if tracing_asked:
        raise ConfigError(
            "--endpoint talks to a deployed agent, which records its own traces (its experiment or "
            "inference tables): drop --trace and --experiment."
        )
    agent = cast(Any, EndpointAgent(endpoint))  # Any: it has the agent's predict_stream shape
    if question is not None:
        commands.ask(agent, [commands.user_message(question)], commands.echo_raw)
    else:
        commands.repl(agent, commands.echo_raw, read=_read_line)


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None
