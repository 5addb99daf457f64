"""Conversation rows: parsing, playing turns in order with their history, and the conversation scores."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mlflow
import pandas as pd
import pytest

from ragworks.errors import EvalError
from ragworks.eval import _trace_probe
from ragworks.eval._conversation_scores import carried_facts, consistency, contradictions
from ragworks.eval.conversation_summary import CONSISTENCY, RETENTION, summarise_conversations
from ragworks.eval.conversations import ConversationPlayer, play_conversations
from ragworks.eval.judges import get_judge
from ragworks.eval.suite import EvalSuite, _validate

TURNS = [{"question": "Where is the index?", "expected_facts": ["on disk"]}, {"question": "Is it encrypted?"}]


def test_a_conversation_row_becomes_one_record_per_turn() -> None:
    suite = EvalSuite.model_validate(
        {"rows": [{"inputs": "Hi?"}, {"turns": TURNS, "tags": {"kind": "chat"}}]}
    )
    records = suite.to_records()
    assert records[0] == {"inputs": {"question": "Hi?"}}
    assert [r["inputs"] for r in records[1:]] == [
        {"question": "Where is the index?", "conversation_id": "conversation-2", "turn": 1},
        {"question": "Is it encrypted?", "conversation_id": "conversation-2", "turn": 2},
    ]
    assert records[1]["expectations"] == {"expected_facts": ["on disk"]} and "expectations" not in records[2]
    assert records[2]["tags"] == {"kind": "chat"}
    assert suite.questions() == ["Hi?", "Where is the index?", "Is it encrypted?"]


def test_conversation_errors_name_the_row_and_the_turn() -> None:
    with pytest.raises(EvalError) as info:
        _validate({"rows": [{"turns": [{"question": "ok"}, {"question": "  ", "answer": "x"}]}]}, source="s")
    message = str(info.value)
    assert "row 1, turn 2.question" in message
    assert "row 1, turn 2.answer: unknown field; allowed: question, expected_response" in message
    with pytest.raises(EvalError, match="conversation ids must be unique; repeated: a"):
        _validate({"rows": [{"id": "a", "turns": TURNS}, {"id": "a", "turns": TURNS}]}, source="s")


def test_single_turn_suites_keep_their_predict_fn() -> None:
    def predict(**inputs: Any) -> str:
        return "x"

    assert play_conversations(predict, [{"inputs": {"question": "q"}}]) is predict


def test_turns_wait_for_their_predecessor_and_get_its_answer() -> None:
    seen: dict[str, list[dict[str, str]]] = {}

    def predict(**request: Any) -> dict[str, str]:
        question = request["input"][-1]["content"]
        if question.endswith("1"):
            time.sleep(0.2)  # turn 2 is dequeued meanwhile and must wait, not run on no history
        seen[question] = request["input"]
        assert request["context"]["conversation_id"] == "c"
        return {"answer": f"answer to {question}"}

    player = ConversationPlayer(predict)
    records = [{"question": f"q{t}", "conversation_id": "c", "turn": t} for t in (1, 2, 3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda inputs: player(**inputs), records))
    assert [m["content"] for m in seen["q3"]] == ["q1", "answer to q1", "q2", "answer to q2", "q3"]


def test_a_turn_whose_predecessor_never_ran_fails_with_a_message() -> None:
    player = ConversationPlayer(lambda **request: {"answer": "a"}, wait_s=0.05)
    with pytest.raises(EvalError, match="Turn 2 of conversation 'c' waited 0s for turn 1"):
        player(question="q2", conversation_id="c", turn=2)


def test_the_untraced_trace_check_is_not_kept_in_the_history() -> None:
    assert _trace_probe.AVAILABLE  # this MLflow has the hook: the fallback is not in use
    answers = iter(["probe answer", "scored answer", "second"])
    prompts: list[list[dict[str, str]]] = []

    def predict(**request: Any) -> dict[str, str]:
        prompts.append(request["input"])
        return {"answer": next(answers)}

    player = ConversationPlayer(predict)
    mlflow.tracing.disable()
    try:
        assert not _trace_probe.tracing_on()
        player(question="q1", conversation_id="c", turn=1)  # as evaluate's first-row check calls it
    finally:
        mlflow.tracing.enable()
    assert _trace_probe.tracing_on()
    player(question="q1", conversation_id="c", turn=1)
    player(question="q2", conversation_id="c", turn=2)
    assert prompts[-1][1]["content"] == "scored answer"


def test_a_negated_or_renumbered_claim_contradicts_and_a_restatement_does_not() -> None:
    earlier = ["The index keeps five shards on local disk."]
    assert contradictions(earlier, "The index keeps five shards on local disk [1].") == []
    assert contradictions(earlier, "The index never keeps five shards on local disk.")
    assert contradictions(earlier, "The index keeps 7 shards on local disk.")
    assert contradictions(earlier, "Serving runs on FastAPI.") == []
    score, why = consistency(
        [earlier[0], "Serving runs on FastAPI.", "The index does not keep five shards on local disk."]
    )
    assert score == 0.5 and "Turn 3 contradicts" in why


def test_retention_counts_only_facts_said_earlier() -> None:
    facts = ["the index lives in /data/idx", "BM25 ranks chunks"]
    assert carried_facts(facts, ["My index lives in /data/idx.", "Noted."]) == [facts[0]]
    table = pd.DataFrame(
        {
            "conversation": ["c", "c", None],
            "turn": [1, 2, None],
            "question": ["My index lives in /data/idx.", "Where does my index live?", "Other?"],
            "faithfulness": [1.0, 0.5, 0.9],
        }
    )
    records = [
        {"inputs": {"question": "My index lives in /data/idx.", "conversation_id": "c", "turn": 1}},
        {
            "inputs": {"question": "Where?", "conversation_id": "c", "turn": 2},
            "expectations": {"expected_facts": facts},
        },
        {"inputs": {"question": "Other?"}},
    ]
    judge = get_judge("offline:lexical")
    kept = summarise_conversations(
        table, ["Noted.", "It lives in /data/idx.", "x"], records, judge=judge, metrics=["faithfulness"]
    )
    assert kept.metrics[RETENTION].mean == 1.0 and kept.metrics[CONSISTENCY].n == 1
    assert kept.per_turn == {1: {"faithfulness": 1.0}, 2: {"faithfulness": 0.5}}
    lost = summarise_conversations(table, ["Noted.", "I do not know.", "x"], records, judge=judge, metrics=[])
    assert lost.metrics[RETENTION].mean == 0.0
    assert lost.mlflow_metrics()[f"{RETENTION}/mean"] == 0.0


def test_a_failing_judge_is_an_error_of_retention_not_a_low_score() -> None:
    class Broken:
        name = "broken"

        def correctness(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("judge down")

    table = pd.DataFrame(
        {"conversation": ["c", "c"], "turn": [1, 2], "question": ["I use /data/idx.", "Where?"]}
    )
    records = [
        {"inputs": {"question": "I use /data/idx.", "conversation_id": "c", "turn": 1}},
        {
            "inputs": {"question": "Where?", "conversation_id": "c", "turn": 2},
            "expectations": {"expected_facts": ["/data/idx"]},
        },
    ]
    summary = summarise_conversations(table, ["ok", "ok"], records, judge=Broken(), metrics=[])  # type: ignore[arg-type]
    assert summary.metrics[RETENTION].errors == 1 and summary.metrics[RETENTION].n == 0
    assert "judge down" in summary.metrics[RETENTION].first_error
