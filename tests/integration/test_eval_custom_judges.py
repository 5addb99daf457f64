"""Custom judges end to end: the real `openai` client against the scripted OpenAI stub on 127.0.0.1.

The stub answers each custom judge by its instructions and the row's question, and records every
request, so the tests see the JSON schema sent, malformed replies retried then counted as errors
(the gate fails), 5xx retried, an endpoint that refuses JSON schemas served in JSON mode, and a
second run answered from the cache with no call at all.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow.entities import Document, SpanType
from typer.testing import CliRunner

from ragworks.errors import ConfigError
from ragworks.eval._llm_judge import LLMJudge, make_client
from ragworks.eval.runner import run_suite
from ragworks.eval.suite import EvalSuite
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

ANSWERS = {"qa": "Alpha is red [1].", "qb": "Beta is blue.", "qc": "Gamma is green [1]."}
CITES = "CITES: the answer cites a source with [n]."
CLEAR = "CLEAR: the answer is clear and short."
MATCH = "MATCH: the answer agrees with the expected answer."


def _json(payload: dict[str, Any]) -> StubReply:
    return StubReply(content=json.dumps(payload))


class Script:
    """Replies by (judge marker, question); records each request; the last reply of a queue repeats."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], deque[StubReply]] = {}
        self.seen: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.bodies: list[dict[str, Any]] = []
        self.refuse_schema = False
        self._lock = threading.Lock()

    def on(self, marker: str, question: str, *replies: StubReply) -> None:
        self.queues[(marker, question)] = deque(replies)

    def __call__(self, body: dict[str, Any]) -> StubReply:
        system = body["messages"][0]["content"]
        user = body["messages"][-1]["content"]
        marker = next((m for m in ("CITES", "CLEAR", "MATCH") if m + ":" in system), "builtin")
        question = next((q for q in ANSWERS if f"Question:\n{q}" in user or q in user), "")
        key = (marker, question)
        with self._lock:
            self.bodies.append(body)
            self.seen[key] += 1
            fmt = body.get("response_format") or {}
            if self.refuse_schema and fmt.get("type") == "json_schema":
                return StubReply(status=400, error="response_format json_schema is not supported")
            queue = self.queues.get(key) or deque([_json({"result": "yes", "rationale": "fine"})])
            return queue.popleft() if len(queue) > 1 else queue[0]

    def calls(self) -> int:
        return sum(self.seen.values())


@mlflow.trace(span_type=SpanType.RETRIEVER)
def _retrieve(question: str) -> list[dict[str, Any]]:
    doc = Document(
        page_content=f"{question} passage", metadata={"doc_uri": "/d/one.md", "chunk_id": "1"}, id="1"
    )
    return [doc.to_dict()]


def agent(request: dict[str, Any]) -> dict[str, Any]:
    """A stand-in agent: one RETRIEVER span and a canned answer per question."""
    question = request["input"][-1]["content"]
    _retrieve(question)
    text = ANSWERS[question]
    content = [{"type": "output_text", "text": text}]
    return {"output": [{"type": "message", "role": "assistant", "id": "m", "content": content}]}


def _suite() -> EvalSuite:
    rows = [
        {"inputs": q, "expectations": {"expected_doc_ids": ["one.md"], "expected_response": ANSWERS[q]}}
        for q in ANSWERS
    ]
    judges = [
        {"name": "cites", "instructions": CITES, "scale": "pass-fail", "inputs": ["answer", "context"]},
        {"name": "clarity", "instructions": CLEAR, "scale": "1-5"},
    ]
    return EvalSuite.model_validate({"name": "custom", "rows": rows, "judges": judges})


def _judges_file(tmp_path: Path) -> Path:
    path = tmp_path / "judges.yaml"
    spec = {
        "name": "matches",
        "instructions": MATCH,
        "scale": "0-1",
        "inputs": ["question", "answer", "expected"],
    }
    path.write_text(yaml.safe_dump({"judges": [spec]}))
    return path


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    script = Script()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment(experiment_id="0")
    with OpenAIStub(responder=script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")  # MLflow's judges would fetch prices from GitHub
        yield script


def _judge(cache: Path) -> LLMJudge:
    client = make_client("openai", "judge-model", cache=cache, concurrency=4, timeout=2.0, max_attempts=3)
    client.backoff = 0.01
    return LLMJudge(client, name="openai:judge-model")


def _script(script: Script) -> None:
    script.on("CITES", "qa", _json({"rationale": "cites [1]", "passed": True}))
    script.on("CITES", "qb", _json({"rationale": "no citation", "passed": False}))
    script.on(
        "CITES", "qc", StubReply(status=503, error="busy"), _json({"rationale": "cites", "passed": True})
    )
    script.on("CLEAR", "qa", _json({"rationale": "clear", "rating": 5}))
    script.on("CLEAR", "qb", _json({"rationale": "ok", "rating": 3}))
    script.on("CLEAR", "qc", StubReply(content="not json {"), _json({"rationale": "fine", "rating": 4}))
    for q, score in zip(ANSWERS, (1.0, 0.25, 0.5), strict=True):
        script.on("MATCH", q, _json({"rationale": "compared", "score": score}))


def _details(run_id: str, name: str) -> dict[str, dict[str, Any]]:
    out = {}
    for trace in mlflow.search_traces(run_id=run_id, return_type="list"):
        for a in trace.info.assessments:
            if a.name == name and a.error is None:
                out[trace.info.request_preview] = json.loads(a.metadata["details"])
    return out


def _preview_key(details: dict[str, dict[str, Any]], question: str) -> dict[str, Any]:
    return next(v for k, v in details.items() if question in k)


def test_custom_judges_structured_output_scores_retries_and_cache(stub: Script, tmp_path: Path) -> None:
    _script(stub)
    result = run_suite(
        agent,
        _suite(),
        scorers=["mrr", "mlflow:RelevanceToQuery"],
        judge=_judge(tmp_path / "cache.sqlite"),
        custom_judges=_judges_file(tmp_path),
        concurrency=4,
    )
    table = result.table.set_index("question")
    assert list(table["cites"]) == [1.0, 0.0, 1.0]  # the 503 on qc was retried
    assert list(table["clarity"]) == [1.0, 0.5, 0.75]  # (s - 1) / 4; the malformed reply on qc was retried
    assert list(table["matches"]) == [1.0, 0.25, 0.5]
    assert result.metrics["mrr"].mean == 1.0 and result.metrics["relevance_to_query"].mean == 1.0
    assert result.passed and not result.errors
    assert table.loc["qb", "cites/rationale"].startswith("Fail. no citation")

    # Every custom call carried its scale's JSON schema, and only the inputs the judge declared.
    custom = [b for b in stub.bodies if "against these instructions" in b["messages"][0]["content"]]
    assert custom and all(b["response_format"]["type"] == "json_schema" for b in custom)
    schemas = {
        b["response_format"]["json_schema"]["name"]: b["response_format"]["json_schema"]["schema"]
        for b in custom
    }
    assert schemas["ragworks_1_5"]["properties"]["rating"]["enum"] == [1, 2, 3, 4, 5]
    assert schemas["ragworks_pass_fail"]["required"] == ["rationale", "passed"]
    cites_user = next(b["messages"][1]["content"] for b in custom if CITES in b["messages"][0]["content"])
    assert "Context passages:\n1. " in cites_user and "Question:" not in cites_user

    # The raw verdict is in the details, beside the normalised value.
    clarity = _details(result.run_id, "clarity")
    assert _preview_key(clarity, "qb")["raw"] == 3 and _preview_key(clarity, "qb")["scale"] == "1-5"
    assert _preview_key(_details(result.run_id, "cites"), "qb")["raw"] is False
    assert mlflow.get_run(result.run_id).data.metrics["clarity/mean"] == pytest.approx(0.75)

    # A second run: every custom judgement (and ours) comes from the cache, not the endpoint.
    before = stub.calls()
    again = run_suite(
        agent,
        _suite(),
        scorers=["mrr"],
        judge=_judge(tmp_path / "cache.sqlite"),
        custom_judges=_judges_file(tmp_path),
    )
    assert stub.calls() == before
    assert again.judge_stats["calls"] == 0 and again.judge_stats["cache_hits"] == 9
    assert list(again.table["clarity"]) == [1.0, 0.5, 0.75]


def test_malformed_replies_are_errors_and_fail_the_gate(stub: Script, tmp_path: Path) -> None:
    _script(stub)
    stub.on(
        "CLEAR", "qb", StubReply(content="not json"), _json({"rationale": "x", "rating": 9})
    )  # never valid
    result = run_suite(agent, _suite(), scorers=["mrr"], judge=_judge(tmp_path / "c.sqlite"))
    table = result.table.set_index("question")
    assert stub.seen[("CLEAR", "qb")] == 3  # max_attempts, then an error: never a score
    assert "malformed JSON reply" in table.loc["qb", "clarity/error"]
    clarity = result.metrics["clarity"]
    assert (clarity.n, clarity.errors) == (2, 1)
    assert not result.passed
    assert any(line.startswith("clarity: 1 of 3 rows errored") for line in result.errors)


def test_an_endpoint_without_json_schema_gets_json_mode_and_validated_replies(
    stub: Script, tmp_path: Path
) -> None:
    _script(stub)
    stub.refuse_schema = True
    result = run_suite(agent, _suite(), scorers=["mrr"], judge=_judge(tmp_path / "c.sqlite"), concurrency=1)
    assert list(result.table["clarity"]) == [1.0, 0.5, 0.75]
    custom = [b for b in stub.bodies if "against these instructions" in b["messages"][0]["content"]]
    refused = [b for b in custom if b["response_format"]["type"] == "json_schema"]
    assert len(refused) == 1  # refused once; every later call asked for JSON mode
    assert all(b["response_format"] == {"type": "json_object"} for b in custom if b not in refused)
    assert _preview_key(_details(result.run_id, "clarity"), "qa")["structured"] == "json_object"


def test_custom_judges_with_the_offline_judge_stop_before_any_row(stub: Script, tmp_path: Path) -> None:
    calls: list[Any] = []

    def counting_agent(request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request)
        return agent(request)

    with pytest.raises(ConfigError, match=r"Custom judges \(cites, clarity\) need an LLM judge"):
        run_suite(counting_agent, _suite(), scorers=["mrr"], judge="offline")
    assert calls == [] and stub.calls() == 0


def test_cli_judges_file_with_the_offline_judge_is_one_line(stub: Script, tmp_path: Path) -> None:
    from ragworks.cli import app

    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"rows": [{"inputs": "qa"}]}))
    config = tmp_path / "agent.yaml"
    config.write_text("name: t\n")
    args = [
        "eval",
        str(suite),
        "-c",
        str(config),
        "--judge",
        "offline",
        "--judges",
        str(_judges_file(tmp_path)),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    message = result.output.strip()
    assert "Custom judges (matches) need an LLM judge" in message and len(message.splitlines()) == 1


def test_repeats_judge_custom_judges_anew(stub: Script, tmp_path: Path) -> None:
    _script(stub)
    suite = _suite().model_copy(update={"judges": _suite().judges[1:]})  # clarity only
    result = run_suite(agent, suite, scorers=["mrr"], judge=_judge(tmp_path / "c.sqlite"), repeats=2)
    stats = result.repeats["clarity"]
    assert (stats.repeats, stats.rows, stats.flipped) == (2, 3, 0)
    assert stub.seen[("CLEAR", "qa")] == 2  # the repeat is a new call, not the cached reply
