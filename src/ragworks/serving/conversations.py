"""Conversations on the Responses routes: `previous_response_id`, `store`, and the stored-response routes.

    POST /v1/responses {"previous_response_id": "resp_...", "input": "and then?"}   continue that conversation
    POST /v1/responses {"store": false, ...}                                          keep nothing
    GET /v1/responses/{id}   DELETE /v1/responses/{id}                                 a stored response

Before the run, `begin` gives a request its conversation thread (see `agents._thread`): the stored
response's thread and checkpoint when `previous_response_id` names one (an unknown or expired id is a 400
naming it), else `context.conversation_id`, else a new one. The thread id becomes the request's
`context.conversation_id`, so it is also the trace's session id. After the run, `finish` (on a worker
thread) stores the response with its checkpoint and trace id. Requests that keep nothing and name no
earlier response run exactly as without a store.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.agent import ChatContext
from mlflow.types.responses import ResponsesAgentRequest

from ragworks.agents._thread import THREAD_KEY, Thread
from ragworks.serving.errors import HTTPProblem, handle_error
from ragworks.serving.state import ConversationStore, Retention, StoredResponse, open_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One request's place in a conversation, decided before its run."""

    thread: Thread
    previous_response_id: str | None = None

    @property
    def response_id(self) -> str:
        """The id the answer gets."""
        return self.thread.response_id


def new_conversation_id() -> str:
    """A fresh conversation (thread) id."""
    return f"conv_{uuid.uuid4().hex}"


def _unknown(response_id: str) -> HTTPProblem:
    return HTTPProblem(
        400,
        f"Previous response with id {response_id!r} not found: it is unknown, was deleted, or is past the "
        "server's retention. Start a new conversation (send the whole history in 'input').",
        code="previous_response_not_found",
    )


async def begin(
    store: ConversationStore | None,
    request: ResponsesAgentRequest,
    *,
    response_id: str,
    previous: str | None = None,
    store_default: bool = False,
) -> tuple[ResponsesAgentRequest, Turn | None]:
    """The request to run, with its thread in `custom_inputs`, and its `Turn` (None: stateless).

    `previous` is the request's `previous_response_id`. A request that does not say `store` is stored
    when `store_default` (OpenAI's /v1/responses), or when it names a conversation or an earlier response.
    """
    context = request.context
    named = bool(previous or (context and context.conversation_id))
    keep = request.store if request.store is not None else (store_default or named)
    if store is None:
        if previous:
            raise HTTPProblem(
                400,
                f"previous_response_id {previous!r} cannot be used: this server keeps no conversations "
                "(serving.state is off, or the agent is not a ragworks agent). Send the whole history.",
                code="previous_response_not_found",
            )
        return request, None
    if not keep and not previous:
        return request, None  # nothing to read, nothing to write: the stateless path, unchanged
    checkpoint_id: str | None = None
    thread_id = context.conversation_id if context and context.conversation_id else None
    if previous:
        stored = await anyio.to_thread.run_sync(store.get, previous)
        if stored is None or stored.checkpoint_id is None:
            raise _unknown(previous)
        thread_id, checkpoint_id = stored.thread_id, stored.checkpoint_id
    thread = Thread(
        thread_id=thread_id or new_conversation_id(),
        response_id=response_id,
        checkpoint_id=checkpoint_id,
        keep=keep,
    )
    update = {
        "custom_inputs": {**(request.custom_inputs or {}), THREAD_KEY: thread.as_input()},
        "context": ChatContext(
            conversation_id=thread.thread_id, user_id=context.user_id if context else None
        ),
    }
    return request.model_copy(update=update), Turn(thread=thread, previous_response_id=previous)


def response_fields(turn: Turn, metadata: dict[str, str] | None) -> dict[str, Any]:
    """The answer's conversation fields: `previous_response_id`, and `metadata.conversation_id`."""
    return {
        "previous_response_id": turn.previous_response_id,
        "metadata": {**(metadata or {}), "conversation_id": turn.thread.thread_id},
    }


def finish(store: ConversationStore, turn: Turn, body: dict[str, Any], trace_id: str | None) -> None:
    """Store the answered turn with the checkpoint its run ended on (worker thread; no-op unless kept)."""
    if not turn.thread.keep:
        return
    checkpoint_id = store.checkpoint_of(turn.thread.thread_id, turn.response_id)
    stored = StoredResponse(
        id=turn.response_id,
        thread_id=turn.thread.thread_id,
        checkpoint_id=checkpoint_id,
        trace_id=trace_id,
        created_at=float(body.get("created_at") or time.time()),
        body=body,
    )
    store.put(stored)


async def finish_async(
    store: ConversationStore | None, turn: Turn | None, body: dict[str, Any], trace_id: str | None
) -> None:
    """`finish` off the event loop; nothing for stateless requests."""
    if store is not None and turn is not None and turn.thread.keep:
        await anyio.to_thread.run_sync(finish, store, turn, body, trace_id)


def attach(
    agent: ResponsesAgent, state: ConversationStore | str | None
) -> tuple[ResponsesAgent, ConversationStore | None, bool]:
    """The agent to serve, compiled with the store's checkpointer, the store, and whether we opened it.

    `state` None reads the agent config's `serving.state` (default `auto`). Agents that are not ragworks
    agents keep no state (a logged model of another kind): the store is then None.
    """
    with_checkpointer = getattr(agent, "with_checkpointer", None)
    if with_checkpointer is None:
        logger.info("Conversations are off: %s keeps no LangGraph state", type(agent).__name__)
        return agent, None, False
    opened = not isinstance(state, ConversationStore)
    if isinstance(state, ConversationStore):
        store: ConversationStore | None = state
    else:
        serving = getattr(getattr(agent, "config", None), "serving", None)
        setting = state if state is not None else getattr(serving, "state", None)
        retention = Retention(
            max_age_s=getattr(serving, "max_age_days", 30.0) * 86400.0,
            max_responses=getattr(serving, "max_responses", 100_000),
        )
        store = open_state(setting, retention=retention)
    if store is None:
        return agent, None, False
    logger.info("Conversations are stored in %s", store.where)
    return with_checkpointer(store.checkpointer), store, opened


def prepare_state(config: str | None) -> None:
    """Open the store a config names once and set up its tables, before `--workers` processes start.

    The workers would otherwise race to create the tables; a store that cannot be opened is one line
    here (ConfigError naming `serving.state`) rather than a failure in every worker.
    """
    from ragworks.config import AgentConfig

    serving = AgentConfig.load(config).serving
    retention = Retention(max_age_s=serving.max_age_days * 86400.0, max_responses=serving.max_responses)
    store = open_state(serving.state, retention=retention)
    if store is not None:
        store.close()


def add_conversation_routes(app: FastAPI, store: ConversationStore | None) -> None:
    """GET and DELETE /v1/responses/{id}: a stored response, in OpenAI's shapes (404 when unknown)."""

    def missing(response_id: str) -> HTTPProblem:
        return HTTPProblem(
            404,
            f"No stored response with id {response_id!r}: it is unknown, deleted, past retention, or was "
            "created with store: false.",
            code="response_not_found",
        )

    async def get_response(request: Request) -> Any:
        response_id = request.path_params["response_id"]
        try:
            stored = await anyio.to_thread.run_sync(store.get, response_id) if store else None
            if stored is None:
                raise missing(response_id)
        except Exception as exc:
            return handle_error(request, exc)
        return JSONResponse(stored.body)

    async def delete_response(request: Request) -> Any:
        response_id = request.path_params["response_id"]
        try:
            gone = await anyio.to_thread.run_sync(store.delete, response_id) if store else False
            if not gone:
                raise missing(response_id)
        except Exception as exc:
            return handle_error(request, exc)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    path = "/v1/responses/{response_id}"
    app.add_api_route(path, get_response, methods=["GET"], summary="A stored response")
    app.add_api_route(path, delete_response, methods=["DELETE"], summary="Delete a stored response")
