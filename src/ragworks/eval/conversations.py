"""Multi-turn rows: play each conversation through the agent in order, with the conversation so far.

A conversation's records are one per turn (`ragworks.eval.suite`), so MLflow scores every turn as
its own row and trace. `ConversationPlayer` wraps the run's `predict_fn`: a turn's record is
answered only after the earlier turns of its conversation were, and the agent gets them as its
history (`input` = earlier questions and answers, then the turn's question) plus the conversation's
id as `context.conversation_id` (the traces' session). Every predict pool here (ours and MLflow's)
takes records first in, first out and a conversation's turns come in order, so a waiting turn's
predecessors are already running; a turn that still waits `wait_s` fails with an error saying so.
`evaluate`'s untraced check of the first row (`ragworks.eval._trace_probe`) is answered but
neither waits nor enters the history, so the history holds the answers that were scored.

Example:
    >>> calls = []
    >>> player = ConversationPlayer(lambda **inputs: calls.append(inputs) or {"answer": "yes"})
    >>> _ = player(question="Is it local?", conversation_id="c", turn=1)
    >>> _ = player(question="Offline too?", conversation_id="c", turn=2)
    >>> [m["content"] for m in calls[1]["input"]]
    ['Is it local?', 'yes', 'Offline too?']
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragworks.errors import EvalError
from ragworks.eval._extract import answer_of
from ragworks.eval._targets import PredictFn
from ragworks.eval._trace_probe import tracing_on
from ragworks.eval.suite import CONVERSATION_KEY, TURN_KEY

WAIT_S = 600.0
"""How long a turn waits for its conversation's earlier turns before it fails."""


def turn_of(inputs: object) -> tuple[str, int] | None:
    """The (conversation id, turn number) of a turn's inputs; None for a single-turn row."""
    if not isinstance(inputs, Mapping):
        return None
    conversation, turn = inputs.get(CONVERSATION_KEY), inputs.get(TURN_KEY)
    if isinstance(conversation, str) and isinstance(turn, int) and not isinstance(turn, bool) and turn >= 1:
        return conversation, turn
    return None


def conversation_ids(records: Sequence[Mapping[str, Any]]) -> set[str]:
    """The conversation ids of the turn records (Any: JSON records)."""
    return {key[0] for r in records if (key := turn_of(r.get("inputs"))) is not None}


def turn_of_request(request: object, known: Collection[str]) -> tuple[str, int] | None:
    """The (conversation, turn) of a trace's request: the turn's inputs, or the request the player sent.

    The player's request carries the conversation as `context.conversation_id` (one of `known`) and
    one user message per turn so far, its own last.
    """
    if (key := turn_of(request)) is not None:
        return key
    if isinstance(request, Mapping) and isinstance(request.get("request"), Mapping):
        request = request["request"]  # a predict_fn(request=...) signature
    if not isinstance(request, Mapping) or not isinstance(request.get("context"), Mapping):
        return None
    conversation, items = request["context"].get("conversation_id"), request.get("input")
    if conversation not in known or not isinstance(items, list):
        return None
    users = sum(1 for item in items if isinstance(item, Mapping) and item.get("role") == "user")
    return (str(conversation), users) if users else None


def has_turns(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any record is a conversation turn (Any: JSON records)."""
    return any(turn_of(r.get("inputs")) is not None for r in records)


@dataclass(slots=True)
class _Played:
    """The turns of one conversation answered so far: turn number -> (question, answer)."""

    turns: dict[int, tuple[str, str]] = field(default_factory=dict)

    def ready(self, turn: int) -> bool:
        return all(t in self.turns for t in range(1, turn))


class ConversationPlayer:
    """A `predict_fn` that answers each conversation turn with the conversation so far as history."""

    def __init__(self, predict_fn: PredictFn, *, wait_s: float = WAIT_S) -> None:
        self._predict = predict_fn
        self._wait_s = wait_s
        self._changed = threading.Condition()
        self._played: dict[str, _Played] = {}

    def __call__(self, **inputs: Any) -> object:  # Any: the suite row's JSON inputs
        """Answer a record: a turn with its history, any other row exactly as `predict_fn` would."""
        key = turn_of(inputs)
        if key is None:
            return self._predict(**inputs)
        conversation, turn = key
        if not tracing_on():  # evaluate's untraced check: answered, neither waited for nor kept
            return self._predict(**self._request(inputs, self._earlier(conversation, turn, wait=False)))
        request = self._request(inputs, self._earlier(conversation, turn, wait=True))
        answer = ""
        try:
            output = self._predict(**request)
            answer = answer_of(output)
            return output
        finally:  # a failed turn still releases the turns after it (with no answer in their history)
            self._record(conversation, turn, str(inputs.get("question", "")), answer)

    @staticmethod
    def _request(inputs: Mapping[str, Any], earlier: list[tuple[str, str]]) -> dict[str, Any]:
        """The turn as a Responses request: the earlier turns, then its question (Any: JSON)."""
        question = str(inputs.get("question", ""))
        conversation = inputs[CONVERSATION_KEY]
        request = {k: v for k, v in inputs.items() if k not in ("question", CONVERSATION_KEY, TURN_KEY)}
        request["input"] = [*history(earlier), {"role": "user", "content": question}]
        request["context"] = {**dict(request.get("context") or {}), "conversation_id": conversation}
        return request

    def _earlier(self, conversation: str, turn: int, *, wait: bool) -> list[tuple[str, str]]:
        with self._changed:
            played = self._played.setdefault(conversation, _Played())
            if not wait:
                return [played.turns[t] for t in range(1, turn) if t in played.turns]
            if not self._changed.wait_for(lambda: played.ready(turn), timeout=self._wait_s):
                missing = [t for t in range(1, turn) if t not in played.turns]
                raise EvalError(
                    f"Turn {turn} of conversation {conversation!r} waited {self._wait_s:.0f}s for turn "
                    f"{missing[0]}: predict rows in suite order (turns of a conversation in sequence)."
                )
            return [played.turns[t] for t in range(1, turn)]

    def _record(self, conversation: str, turn: int, question: str, answer: str) -> None:
        with self._changed:
            self._played.setdefault(conversation, _Played()).turns[turn] = (question, answer)
            self._changed.notify_all()


def history(turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Responses input items for earlier (question, answer) turns; a turn with no answer adds its question."""
    items = []
    for question, answer in turns:
        items.append({"role": "user", "content": question})
        if answer:
            items.append({"role": "assistant", "content": answer})
    return items


def play_conversations(predict_fn: PredictFn, records: Sequence[Mapping[str, Any]]) -> PredictFn:
    """`predict_fn` wrapped in a `ConversationPlayer` when any record is a turn, else unchanged."""
    return ConversationPlayer(predict_fn) if has_turns(records) else predict_fn
