"""`ragworks eval --spark` on local Spark logs what a local eval logs: metrics, gate, failed rows, traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import typer
from typer.testing import CliRunner

from ragworks.errors import ConfigError
from ragworks.eval.commands import register
from ragworks.eval.scorers import SCORER_NAMES
from ragworks.eval.suite import example_suite, example_suite_path

FAULTY_RETRIEVER = '''
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


class Faulty(BaseRetriever):
    """Fails on any question that says boom; else returns one overview chunk."""

    def _get_relevant_documents(self, query, *, run_manager):
        if "boom" in query:
            raise RuntimeError("the retriever exploded")
        doc = "ragworks is a Python framework for retrieval-augmented generation agents on MLflow."
        return [Document(page_content=doc, metadata={"source": "overview.md"}, id="overview-0")]
'''


@pytest.fixture(scope="module")
def agent_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("spark-eval")
    ingest([shipped_docs()], root / "index", embeddings="hashing")
    config = root / "agent.yaml"
    config.write_text("retriever:\n  type: local\n  index: index\n  k: 3\n", encoding="utf-8")
    return config


@pytest.fixture
def tracking(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id="0")
    return uri


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def _eval(*args: str) -> Any:  # Any: click's Result
    return CliRunner().invoke(_cli(), ["eval", *args])


def _last_run() -> Any:  # Any: a pandas row of mlflow.search_runs
    return mlflow.search_runs(experiment_ids=["0"], order_by=["start_time DESC"]).iloc[0]


def _metrics(row: Any) -> dict[str, float]:
    return {k[len("metrics.") :]: v for k, v in row.items() if k.startswith("metrics.") and v == v}


@pytest.mark.slow  # Spark eval runs: tens of seconds on a shared 2-core machine
def test_spark_run_logs_the_metrics_of_a_local_run(spark: Any, agent_config: Path, tracking: str) -> None:
    scorers = [arg for name in SCORER_NAMES for arg in ("-s", name)]
    args = [str(example_suite_path()), "--config", str(agent_config), "--judge", "offline:lexical", "-k", "3"]
    local = _eval(*args, *scorers)
    assert local.exit_code == 0, local.output
    local_row = _last_run()
    on_spark = _eval(*args, *scorers, "--spark")
    assert on_spark.exit_code == 0, on_spark.output
    spark_row = _last_run()
    assert spark_row.run_id != local_row.run_id

    local_metrics, spark_metrics = _metrics(local_row), _metrics(spark_row)
    assert set(spark_metrics) == set(local_metrics)
    assert {f"{name}/mean" for name in SCORER_NAMES} <= set(spark_metrics)
    for name, value in local_metrics.items():
        if name != "eval/elapsed_s":
            assert spark_metrics[name] == pytest.approx(value, abs=1e-9), name
    assert spark_row["tags.ragworks.eval.passed"] == "true"

    # The executors' traces are stored in the run, with their spans, and carry the assessments.
    rows = len(example_suite().to_records())
    traces = mlflow.search_traces(run_id=spark_row.run_id, return_type="list")
    assert len(traces) == rows
    for trace in traces:
        assert [s.span_type for s in trace.data.spans][:2] == ["AGENT", "RETRIEVER"]
        assert {a.name for a in trace.info.assessments} >= {"faithfulness", "recall_at_k", "mrr"}
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(spark_row.run_id)}
    assert {"eval_results.json", "eval_report.html"} <= artifacts


@pytest.mark.slow  # Spark eval runs: tens of seconds on a shared 2-core machine
def test_spark_gate_fails_an_impossible_threshold(spark: Any, agent_config: Path, tracking: str) -> None:
    args = [str(example_suite_path()), "--config", str(agent_config), "--judge", "offline:lexical"]
    failed = _eval(*args, "-s", "mrr", "--spark", "--fail-under", "mrr=1.01")
    assert failed.exit_code == 1
    assert "FAIL mrr" in failed.output and "failed: mrr: mean" in failed.output
    assert _last_run()["tags.ragworks.eval.passed"] == "false"


@pytest.mark.slow  # Spark eval runs: tens of seconds on a shared 2-core machine
def test_a_failed_prediction_is_reported_not_scored(
    spark: Any, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "ragworks_spark_faulty.py"
    module.write_text(FAULTY_RETRIEVER, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver builds the agent too
    spark.sparkContext.addPyFile(str(module))  # and so does every executor
    config = tmp_path / "agent.yaml"
    config.write_text("retriever:\n  type: langchain:ragworks_spark_faulty:Faulty\n", encoding="utf-8")
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        "".join(
            json.dumps({"inputs": {"question": q}, "expectations": {"expected_doc_ids": ["overview.md"]}})
            + "\n"
            for q in ("What is ragworks?", "boom?")
        ),
        encoding="utf-8",
    )
    args = [str(suite), "--config", str(config), "--judge", "offline:lexical", "-s", "mrr"]
    args += ["-s", "faithfulness"]
    results = {}
    for mode in ("local", "spark"):
        outcome = _eval(*args, *(["--spark"] if mode == "spark" else []))
        assert outcome.exit_code == 1, outcome.output
        assert "predictions: the agent failed on 1 of 2 rows" in outcome.output
        run_id = _last_run().run_id
        table = mlflow.load_table("eval_results.json", run_ids=[run_id])
        failed = table[table["question"] == "boom?"].iloc[0]
        assert failed["state"] == "ERROR" and failed["answer"] == ""
        assert "exploded" not in json.dumps(failed.get("answer"))
        results[mode] = _metrics(_last_run())
    assert results["spark"]["mrr/mean"] == pytest.approx(results["local"]["mrr/mean"])
    assert results["spark"]["faithfulness/n"] == results["local"]["faithfulness/n"]


def test_spark_without_pyspark_is_one_line(
    agent_config: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.scale import spark_session

    def missing() -> None:
        raise ConfigError("--spark needs the spark extra: pip install 'ragworks[spark]'.")

    monkeypatch.setattr(spark_session, "require_pyspark", missing)
    outcome = _eval(str(example_suite_path()), "--config", str(agent_config), "--spark")
    assert outcome.exit_code == 1
    assert outcome.output.strip() == "Error: --spark needs the spark extra: pip install 'ragworks[spark]'."
    assert mlflow.search_runs(experiment_ids=["0"]).empty  # refused before any run was logged


def test_spark_without_java_is_one_line(
    spark: Any, agent_config: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.sql import SparkSession

    def no_java(self: Any) -> Any:
        raise RuntimeError("[JAVA_GATEWAY_EXITED] Java gateway process exited before sending its port.")

    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", no_java)
    args = [str(example_suite_path()), "--config", str(agent_config), "--spark", "--master", "local[2]"]
    outcome = _eval(*args)
    assert outcome.exit_code == 1
    lines = outcome.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Could not start Spark on 'local[2]'")
    assert "Java runtime" in lines[0]
    assert mlflow.search_runs(experiment_ids=["0"]).empty


@pytest.mark.slow  # two eval runs, one on Spark
def test_an_llm_judge_runs_on_the_driver_with_its_cache_and_retries(
    spark: Any, agent_config: Path, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.eval._llm_judge import LLMJudge, make_client
    from ragworks.eval.runner import run_suite
    from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

    calls: list[str] = []
    flaky = {"left": 2}

    def reply(body: dict[str, Any]) -> StubReply:
        calls.append(body["messages"][-1]["content"])
        if flaky["left"] > 0:  # the first calls fail once each: the judge's retries take them
            flaky["left"] -= 1
            return StubReply(status=429)
        return StubReply(content=json.dumps({"rating": 5, "rationale": "it answers"}))

    def judge(cache: Path) -> LLMJudge:
        client = make_client("openai", "judge-model", cache=cache, concurrency=4, timeout=5, max_attempts=3)
        client.backoff = 0.01
        return LLMJudge(client, name="openai:judge-model")

    with OpenAIStub(responder=reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        runs = {}
        for mode in ("local", "spark"):
            flaky["left"] = 2
            runs[mode] = run_suite(
                agent_config,
                example_suite_path(),
                scorers=["answer_relevance", "mrr"],
                judge=judge(tmp_path / f"{mode}.sqlite"),
                k=3,
                spark=mode == "spark",
            )
        again = run_suite(
            agent_config,
            example_suite_path(),
            scorers=["answer_relevance"],
            judge=judge(tmp_path / "spark.sqlite"),
            k=3,
            spark=True,
        )
    local, on_spark = runs["local"], runs["spark"]
    assert on_spark.passed, on_spark.summary()
    for name in ("answer_relevance", "mrr"):
        assert on_spark.metrics[name].mean == pytest.approx(local.metrics[name].mean)
        assert on_spark.metrics[name].n == local.metrics[name].n
    # The same judge calls from the driver's pool, the two 429s retried, then all from the cache.
    assert on_spark.judge_stats == local.judge_stats
    assert on_spark.judge_stats["retries"] == 2 and on_spark.judge_stats["failures"] == 0
    answered = on_spark.judge_stats["calls"] - 2
    assert answered > 0 and len(calls) == 2 * (answered + 2)
    assert again.judge_stats["cache_hits"] == answered and again.judge_stats["calls"] == 0


CONVERSATION_SUITE = """name: conversations
rows:
  - inputs: What is ragworks?
    expectations: {expected_doc_ids: [overview.md]}
  - id: setup-chat
    turns:
      - question: My index lives in ./data/idx. How do I build it?
        expected_doc_ids: [indexing.md]
      - question: How do I serve an agent over it?
        expected_doc_ids: [serving.md]
      - question: Where does my index live again?
        expected_facts: ["./data/idx"]
"""


@pytest.mark.slow  # two eval runs, one on Spark
def test_conversation_turns_play_in_order_on_spark(
    spark: Any, agent_config: Path, tracking: str, tmp_path: Path
) -> None:
    from ragworks.eval.runner import run_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text(CONVERSATION_SUITE, encoding="utf-8")
    local = run_suite(agent_config, suite, judge="offline:lexical", k=3)
    on_spark = run_suite(agent_config, suite, judge="offline:lexical", k=3, spark=True)
    # Each turn saw the same history (the earlier answers), so answers and every metric agree,
    # the per-turn and conversation metrics included.
    assert list(on_spark.table["answer"]) == list(local.table["answer"])
    assert "conversation_consistency" in on_spark.metrics
    local_metrics = mlflow.MlflowClient().get_run(local.run_id).data.metrics
    spark_metrics = mlflow.MlflowClient().get_run(on_spark.run_id).data.metrics
    assert set(spark_metrics) == set(local_metrics)
    assert any(name.startswith("turn_3/") for name in spark_metrics)
    for name, value in local_metrics.items():
        if name != "eval/elapsed_s":
            assert spark_metrics[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.slow  # a Spark job that fails
def test_executors_that_cannot_build_the_agent_fail_the_run_in_one_line(
    spark: Any, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "ragworks_driver_only.py"
    module.write_text(FAULTY_RETRIEVER, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable on the driver, never shipped to executors
    config = tmp_path / "agent.yaml"
    config.write_text("retriever:\n  type: langchain:ragworks_driver_only:Faulty\n", encoding="utf-8")
    outcome = _eval(str(example_suite_path()), "--config", str(config), "-s", "mrr", "--spark")
    assert outcome.exit_code == 1
    lines = outcome.output.strip().splitlines()
    assert lines[-1].startswith("Error: The Spark job of the eval failed:")
    assert "ragworks_driver_only" in lines[-1]
    run = _last_run()
    assert run.status == "FAILED" and "metrics.mrr/mean" not in run  # nothing half-logged as a result
