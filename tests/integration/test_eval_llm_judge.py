"""LLM judges end to end: the real `openai` client against a scripted stub server on 127.0.0.1.

The stub answers by prompt kind and row; the scripts cover claims + verdicts, malformed JSON, 429
then success (Retry-After), a timeout, and a judge that keeps failing (an error on that row only).
A second run of the suite is answered entirely from the SQLite cache.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.entities import Document, SpanType

from ragworks.eval._llm_judge import LLMJudge, make_client
from ragworks.eval.runner import run_suite
from ragworks.eval.suite import EvalSuite
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

KINDS = {
    "atomic factual claims": "claims",
    "check claims against context": "verify",
    "grade whether an answer addresses": "answer_relevance",
    "retrieved passage holds information": "context_relevance",
    "states each expected fact": "correctness",
}
ANSWERS = {
    "qa": "Alpha is red. Alpha is huge.",
    "qb": "Beta is blue.",
    "qc": "Gamma is green.",
}


def _json(payload: dict[str, Any]) -> StubReply:
    return StubReply(content=json.dumps(payload))


class Script:
    """Replies by (prompt kind, marker in the prompt); the last reply of a queue repeats."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], deque[Any]] = {}
        self.seen: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def on(self, kind: str, marker: str, *replies: Any) -> None:
        self.queues[(kind, marker)] = deque(replies)

    def __call__(self, body: dict[str, Any]) -> StubReply:
        system = body["messages"][0]["content"] if len(body["messages"]) > 1 else ""
        kind = next((k for key, k in KINDS.items() if key in system), "builtin")
        user = body["messages"][-1]["content"]
        key = next(((k, m) for (k, m) in self.queues if k == kind and m in user), (kind, ""))
        with self._lock:
            self.seen[key] += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
            queue = self.queues.get(key, deque([_json({"result": "yes", "rationale": "looks fine"})]))
            reply = queue.popleft() if len(queue) > 1 else queue[0]
        try:
            if isinstance(reply, tuple):  # ("sleep", seconds, reply)
                time.sleep(reply[1])
                reply = reply[2]
            return reply
        finally:
            with self._lock:
                self.active -= 1


@mlflow.trace(span_type=SpanType.RETRIEVER)
def _retrieve(question: str) -> list[dict[str, Any]]:
    return [
        Document(
            page_content=f"{question} passage one", metadata={"doc_uri": "/d/one.md", "chunk_id": "1"}, id="1"
        ).to_dict(),
        Document(
            page_content=f"{question} passage two", metadata={"doc_uri": "/d/two.md", "chunk_id": "2"}, id="2"
        ).to_dict(),
    ]


def agent(request: dict[str, Any]) -> dict[str, Any]:
    """A stand-in agent: one RETRIEVER span and a canned answer per question."""
    question = request["input"][-1]["content"]
    _retrieve(question)
    text = ANSWERS[question]
    return {
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "id": "m",
                "content": [{"type": "output_text", "text": text}],
            }
        ]
    }


SUITE = EvalSuite.model_validate(
    {
        "name": "llm",
        "rows": [{"inputs": q, "expectations": {"expected_doc_ids": ["one.md"]}} for q in ANSWERS],
    }
)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    script = Script()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment(experiment_id="0")
    with OpenAIStub(responder=script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-never-logged")
        monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")  # MLflow's judges would fetch prices from GitHub
        yield script, server


def _judge(cache: Path, **kwargs: Any) -> LLMJudge:
    client = make_client(
        "openai", "judge-model", cache=cache, concurrency=4, timeout=0.5, max_attempts=3, **kwargs
    )
    client.backoff = 0.01
    return LLMJudge(client, name="openai:judge-model")


def _script_rows(script: Script) -> None:
    claims = lambda *c: _json({"claims": list(c)})  # noqa: E731
    script.on("claims", "Alpha is red", claims("Alpha is red", "Alpha is huge"))
    script.on(
        "verify",
        "Alpha is huge",
        _json(
            {
                "verdicts": [
                    {"claim": "Alpha is red", "supported": True},
                    {"claim": "Alpha is huge", "supported": False},
                ]
            }
        ),
    )
    script.on(
        "answer_relevance",
        "qa",
        StubReply(status=429, error="slow down", retry_after_ms=20),
        _json({"rating": 5, "noncommittal": False, "rationale": "direct"}),
    )
    script.on("claims", "Beta is blue", StubReply(content="this is not JSON {"), claims("Beta is blue"))
    script.on("verify", "Beta is blue", _json({"verdicts": [{"supported": True}]}))
    script.on(
        "answer_relevance",
        "qb",
        ("sleep", 1.0, _json({"rating": 1})),
        _json({"rating": 3, "noncommittal": False, "rationale": "partly"}),
    )
    script.on("claims", "Gamma is green", StubReply(status=500, error="judge down", retry_after_ms=1))
    script.on("answer_relevance", "qc", _json({"rating": 4, "noncommittal": True, "rationale": "evasive"}))


def test_llm_judge_scores_retries_errors_and_cache(
    stub: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script, _server = stub
    _script_rows(script)
    judge = _judge(tmp_path / "cache.sqlite")
    caplog.set_level("DEBUG")
    result = run_suite(
        agent, SUITE, scorers=["faithfulness", "answer_relevance", "mrr"], judge=judge, concurrency=4
    )

    table = result.table.set_index("question")
    assert table.loc["qa", "faithfulness"] == 0.5
    assert "Unsupported: Alpha is huge" in table.loc["qa", "faithfulness/rationale"]
    assert table.loc["qb", "faithfulness"] == 1.0  # malformed JSON, then a good reply
    assert table.loc["qa", "answer_relevance"] == 1.0  # 429, then a good reply
    assert table.loc["qb", "answer_relevance"] == 0.5  # a timeout, then a good reply
    assert table.loc["qc", "answer_relevance"] == 0.0  # noncommittal
    assert "HTTP 500" in table.loc["qc", "faithfulness/error"]  # every attempt failed: an error row
    faith = result.metrics["faithfulness"]
    assert (faith.mean, faith.n, faith.errors) == (0.75, 2, 1)
    assert result.metrics["mrr"].mean == 1.0

    stats = result.judge_stats
    assert stats["failures"] == 1 and stats["retries"] >= 5  # 429 + malformed + timeout + 2 x 500
    assert script.seen[("claims", "Gamma is green")] == 3  # max_attempts
    assert script.peak <= 4  # the bounded pool
    assert "sk-secret-never-logged" not in caplog.text

    traces = {
        t.info.request_preview: t for t in mlflow.search_traces(run_id=result.run_id, return_type="list")
    }
    errors = [a for t in traces.values() for a in t.info.assessments if a.name == "faithfulness" and a.error]
    assert len(errors) == 1 and errors[0].error.error_code == "JUDGE_ERROR"
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["faithfulness/mean"] == 0.75 and metrics["faithfulness/errors"] == 1
    assert metrics["judge/failures"] == 1

    # Second run: every successful judgement comes from the cache; only the failing one is retried.
    before = dict(script.seen)
    again = run_suite(
        agent, SUITE, scorers=["faithfulness", "answer_relevance"], judge=_judge(tmp_path / "cache.sqlite")
    )
    new_calls = {k: v - before.get(k, 0) for k, v in script.seen.items() if v != before.get(k, 0)}
    assert new_calls == {("claims", "Gamma is green"): 3}
    assert again.judge_stats["cache_hits"] == 7  # 2 x (claims + verify) + 3 x answer_relevance
    assert again.metrics["faithfulness"].mean == 0.75


def test_our_scorers_mix_with_mlflow_builtins(stub: Any, tmp_path: Path) -> None:
    from mlflow.genai.scorers import RelevanceToQuery, RetrievalGroundedness

    script, _ = stub
    script.on("claims", "", _json({"claims": ["It is so"]}))
    script.on("verify", "", _json({"verdicts": [{"supported": True}]}))
    scorers = [
        "faithfulness",
        RelevanceToQuery(model="openai:/judge-model"),
        RetrievalGroundedness(model="openai:/judge-model"),
    ]
    result = run_suite(agent, SUITE, scorers=scorers, judge=_judge(tmp_path / "c.sqlite"))
    assert result.metrics["faithfulness"].mean == 1.0
    assert result.metrics["relevance_to_query"].mean == 1.0
    assert result.metrics["retrieval_groundedness"].mean == 1.0
    logged = mlflow.get_run(result.run_id).data.metrics
    assert {"faithfulness/mean", "relevance_to_query/mean", "retrieval_groundedness/mean"} <= set(logged)


def test_a_4xx_is_not_retried_and_names_the_status(stub: Any, tmp_path: Path) -> None:
    script, _ = stub
    script.on("answer_relevance", "", StubReply(status=400, error="bad request"))
    judge = _judge(tmp_path / "c.sqlite")
    with pytest.raises(Exception, match="HTTP 400"):
        judge.answer_relevance("q", "a")
    assert script.seen[("answer_relevance", "")] == 1
