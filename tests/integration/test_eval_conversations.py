"""A multi-turn suite plays each conversation through the real agent; each turn and conversation is scored."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from ragworks.eval.conversation_summary import CONSISTENCY, RETENTION
from ragworks.eval.runner import run_suite
from ragworks.eval.suite import EvalSuite

SCORERS = ["faithfulness", "answer_relevance", "recall_at_k", "correctness"]
TURNS = [
    {"question": "What is ragworks?", "expected_doc_ids": ["overview.md"]},
    {"question": "How do I serve an agent?", "expected_doc_ids": ["serving.md"]},
    {"question": "How do I evaluate it?", "expected_doc_ids": ["evaluation.md"]},
]


@pytest.fixture(scope="module")
def shipped_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("conversation-docs")
    ingest([shipped_docs()], root / "index", embeddings="hashing")
    return root / "index"


@pytest.fixture
def tracking(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id="0")
    return uri


def _suite(turns: list[dict[str, object]]) -> EvalSuite:
    return EvalSuite.model_validate(
        {"name": "three-turns", "rows": [{"inputs": "What is ragworks?"}, {"id": "chat", "turns": turns}]}
    )


@pytest.mark.usefixtures("tracking")
def test_three_turn_suite_scores_every_turn_and_the_conversation(shipped_index: Path) -> None:
    from ragworks.agents import build_agent

    agent = build_agent({"retriever": {"type": "local", "index": str(shipped_index), "k": 3}})
    first = agent.predict({"input": [{"role": "user", "content": TURNS[0]["question"]}]})
    said = first.output[-1].content[0]["text"]  # turn 3 expects a fact the agent said in turn 1
    turns = [dict(t) for t in TURNS]
    turns[2]["expected_facts"] = [said.split(".")[0]]
    result = run_suite(
        agent, _suite(turns), judge="offline:lexical", scorers=SCORERS, k=3, fail_under={CONSISTENCY: 0.5}
    )

    table = result.table
    chat = table[table["conversation"] == "chat"].sort_values("turn")
    assert list(chat["turn"]) == [1, 2, 3]
    assert list(chat["question"]) == [t["question"] for t in TURNS]
    assert chat["faithfulness"].notna().all() and chat["recall_at_k"].notna().all()
    assert table["turn"].isna().sum() == 1  # the single-turn row stays a plain row
    conversations = result.conversations
    assert conversations is not None
    assert set(conversations.per_turn) == {1, 2, 3}
    assert result.metrics[CONSISTENCY].n == 1 and result.metrics[CONSISTENCY].mean == 1.0
    assert not result.failures and not result.errors, result.summary()
    assert result.metrics[RETENTION].n == 1 and 0.0 <= result.metrics[RETENTION].mean <= 1.0
    assert "carried over 1 fact" in str(conversations.rows[0]["retention_rationale"])

    run = mlflow.get_run(result.run_id)
    assert run.data.metrics[f"{CONSISTENCY}/mean"] == 1.0
    assert run.data.metrics["turn_3/recall_at_k"] == pytest.approx(conversations.per_turn[3]["recall_at_k"])
    assert run.data.metrics["eval/rows"] == 4.0
    traces = mlflow.search_traces(run_id=result.run_id, return_type="list")
    assert len(traces) == 4
    assert sum(t.info.request_metadata.get("mlflow.trace.session") == "chat" for t in traces) == 3
    html = mlflow.artifacts.load_text(f"runs:/{result.run_id}/{result.report}")
    assert "<h2>Conversations</h2>" in html and "turn_" not in result.summary()
    assert "conversation chat (3 turns)" in result.summary()


@pytest.mark.usefixtures("tracking")
def test_scripted_model_sees_the_earlier_turns(shipped_index: Path) -> None:
    from ragworks.agents.graphs import build_rag_graph
    from ragworks.agents.responses_agent import RagResponsesAgent
    from ragworks.retrieval import get_retriever
    from ragworks.testing import ScriptedChatModel

    replies = ["ragworks is a framework [1].", "Run ragworks serve [1].", "Run ragworks eval [1]."]
    model = ScriptedChatModel(responses=replies, repeat_last=True)
    retriever = get_retriever({"type": "local", "index": str(shipped_index), "k": 2})
    agent = RagResponsesAgent(build_rag_graph(retriever, model, condense="keywords"))
    suite = EvalSuite.model_validate({"rows": [{"turns": TURNS}]})
    result = run_suite(agent, suite, judge="offline:lexical", scorers=["faithfulness"], k=2)

    answers = dict(zip(result.table["turn"], result.table["answer"], strict=True))
    for turn in (2, 3):
        (call,) = [c for c in model.history if _asks(c, TURNS[turn - 1]["question"])]
        earlier = [_text(m) for m in call if isinstance(m, (HumanMessage, AIMessage))][:-1]
        for previous in range(1, turn):
            assert TURNS[previous - 1]["question"] in earlier
            assert answers[previous] in earlier
    assert result.metrics[CONSISTENCY].n == 1


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)


def _asks(call: list[BaseMessage], question: str) -> bool:
    return question in _text(call[-1])
