"""A conversation thread a request runs in: which LangGraph thread, from which checkpoint, kept or not.

The server puts a `Thread` in the request's `custom_inputs` under `THREAD_KEY`; `RagResponsesAgent` then
runs its graph compiled with a checkpointer on `thread_id` (LangGraph's own keying of conversations):

- `checkpoint_id` given: the run continues from that checkpoint (the state after an earlier response),
  so only the new turn is in the request; LangGraph forks the thread there when later turns exist.
- no `checkpoint_id`: the request carries the whole conversation (as OpenAI's and MLflow's clients send
  it without `previous_response_id`), which replaces the thread's messages.
- `keep=False` (`store: false`): the earlier turns are read, the new turn is never written.

Per-turn fields (the turn's documents, the tool agent's step count) start afresh on every turn; only the
messages carry over. The final checkpoint's metadata names `response_id`, so the server can find it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from langchain_core.messages import BaseMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.types import Overwrite

THREAD_KEY = "ragworks.thread"
"""`custom_inputs` key holding a `Thread` as a dict."""
RESPONSE_METADATA_KEY = "ragworks_response_id"
"""Checkpoint metadata key naming the response whose run wrote the checkpoint."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Thread:
    """Where one request's run reads and writes its conversation state."""

    thread_id: str
    """The LangGraph thread: the conversation id (also the trace's session id)."""
    response_id: str
    """The id the answer gets; written to the final checkpoint's metadata."""
    checkpoint_id: str | None = None
    """Continue from this checkpoint (the request holds only the new turn); None: the request is whole."""
    keep: bool = True
    """Write the new turn to the thread (False: `store: false`)."""

    def as_input(self) -> dict[str, Any]:
        """The dict form carried in `custom_inputs`."""
        return asdict(self)


def thread_of(custom_inputs: Mapping[str, Any] | None) -> Thread | None:
    """The `Thread` a request's `custom_inputs` carries, or None for a stateless request."""
    raw = (custom_inputs or {}).get(THREAD_KEY)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("thread_id"), str):
        return None
    return Thread(
        thread_id=raw["thread_id"],
        response_id=str(raw.get("response_id") or ""),
        checkpoint_id=raw.get("checkpoint_id") or None,
        keep=bool(raw.get("keep", True)),
    )


def run_config(thread: Thread) -> RunnableConfig:
    """The LangGraph config of a run on `thread`: thread id, starting checkpoint, response metadata."""
    configurable: dict[str, Any] = {"thread_id": thread.thread_id}
    if thread.checkpoint_id:
        configurable["checkpoint_id"] = thread.checkpoint_id
    return {"configurable": configurable, "metadata": {RESPONSE_METADATA_KEY: thread.response_id}}


UNKEPT_CHANNELS = frozenset({"documents"})
"""State a server's checkpoints leave out: every turn starts it afresh (`turn_inputs`), and the turn's
sources reach the answer from the run's updates, so storing them would only be read back and dropped."""


def turn_inputs(thread: Thread, messages: list[BaseMessage]) -> dict[str, Any]:
    """Graph inputs of one turn: its messages (replacing the thread's unless continuing), fresh state."""
    new: list[BaseMessage] = messages
    if thread.checkpoint_id is None:
        new = [RemoveMessage(id=REMOVE_ALL_MESSAGES), *messages]
    return {"messages": new, "documents": Overwrite([]), "steps": 0}
