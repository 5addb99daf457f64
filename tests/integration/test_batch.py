"""`ragworks batch`: questions answered locally and on Spark (local mode) give the same answers.

The agent is the offline model over the shipped docs (hashing embeddings), which is deterministic, so
a local run and a Spark run of the same questions must agree row for row. A failing row is made by
the OpenAI stub on 127.0.0.1 refusing some questions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

import ragworks
from ragworks.cli import app
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

DOCS = Path(ragworks.__file__).parent / "data" / "docs"
_TEMPLATES = (
    "What does the documentation say about {}?",
    "How does ragworks handle {}?",
    "Explain {}.",
    "Where can I read about {}?",
)


def shipped_questions(n: int) -> list[str]:
    """`n` questions made from the shipped docs' sentences (their first words, in a few templates)."""
    sentences = []
    for path in sorted(DOCS.glob("*.md")):
        text = re.sub(r"[`#*]", " ", path.read_text(encoding="utf-8"))
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = sentence.split()
            if len(words) >= 5:
                sentences.append(" ".join(words[:6]).rstrip(".,:;").lower())
    return [
        _TEMPLATES[(i // len(sentences)) % len(_TEMPLATES)].format(sentences[i % len(sentences)])
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def agent_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An offline agent over the shipped docs, indexed with hashing embeddings."""
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("batch")
    ingest([DOCS], root / "index", embeddings="hashing")
    config = root / "agent.yaml"
    config.write_text(f"retriever:\n  type: local\n  index: {root / 'index'}\n", encoding="utf-8")
    return config


def invoke(*args: str) -> Any:  # Any: click's Result
    return CliRunner().invoke(app, [str(a) for a in args])


def rows_per_s(output: str) -> float:
    match = re.search(r"\(([\d.]+) rows/s", output)
    assert match, output
    return float(match.group(1))


@pytest.mark.slow
def test_500_questions_answer_alike_locally_and_on_spark(
    spark: Any, agent_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = shipped_questions(500)
    source = write_jsonl(
        tmp_path / "q.jsonl", [{"id": f"q{i}", "question": q} for i, q in enumerate(questions)]
    )
    local = invoke(
        "batch", source, "--config", agent_yaml, "--output", tmp_path / "local.jsonl", "--no-trace"
    )
    assert local.exit_code == 0, local.output
    on_spark = invoke(
        "batch",
        source,
        "--config",
        agent_yaml,
        "--output",
        tmp_path / "spark.parquet",
        "--spark",
        "--no-trace",
    )
    assert on_spark.exit_code == 0, on_spark.output
    a = pd.read_json(tmp_path / "local.jsonl", lines=True, dtype=False)
    b = pd.read_parquet(tmp_path / "spark.parquet")
    assert list(a["id"]) == list(b["id"]) == [f"q{i}" for i in range(500)]  # every row once, in order
    assert list(a["question"]) == list(b["question"]) == questions
    assert a["error"].isna().all() and b["error"].isna().all()
    assert (a["answer"].str.len() > 0).all()
    assert list(a["answer"]) == list(b["answer"])
    assert [list(s) for s in a["sources"]] == [list(s) for s in b["sources"]]
    assert [list(s) for s in a["source_ids"]] == [list(s) for s in b["source_ids"]]
    assert all(len(s) > 0 for s in a["source_ids"])
    with capsys.disabled():
        print(f"\nbatch, 500 questions: local {rows_per_s(local.output)} rows/s, ", end="")
        print(f"spark {rows_per_s(on_spark.output)} rows/s")


@pytest.fixture(scope="module")
def model_uri(agent_yaml: Path) -> str:
    """The offline agent, logged once for the module."""
    from ragworks.agents.logged_model import log_agent

    return log_agent(agent_yaml).model_uri


@pytest.mark.slow
def test_a_logged_model_answers_on_spark_as_locally_with_traces(
    spark: Any, model_uri: str, tmp_path: Path
) -> None:
    questions = shipped_questions(20)
    source = tmp_path / "q.csv"  # no id column: the row number is the id
    pd.DataFrame({"text": questions}).to_csv(source, index=False)
    local = invoke(
        "batch",
        source,
        "--model-uri",
        model_uri,
        "--question-column",
        "text",
        "-o",
        tmp_path / "l.jsonl",
    )
    assert local.exit_code == 0, local.output
    on_spark = invoke(
        "batch",
        source,
        "--model-uri",
        model_uri,
        "--question-column",
        "text",
        "--spark",
        "-o",
        tmp_path / "answers",  # a folder: Parquet files written by Spark
    )
    assert on_spark.exit_code == 0, on_spark.output
    a = pd.read_json(tmp_path / "l.jsonl", lines=True)
    b = pd.read_parquet(tmp_path / "answers")
    assert list(a["id"]) == list(b["id"]) == list(range(20))
    assert list(a["answer"]) == list(b["answer"]) and b["error"].isna().all()
    assert a["trace_id"].notna().all() and a["trace_id"].nunique() == 20  # local: one trace per row
    assert b["trace_id"].notna().all() and b["trace_id"].nunique() == 20
    for i in (0, 7, 19):  # the executors' traces reached the tracking store, one per row
        trace = mlflow.get_trace(b["trace_id"][i])
        assert trace is not None and trace.info.state == "OK"
        assert questions[i] in json.dumps(trace.data.request)


@pytest.mark.slow
def test_spark_udf_still_cannot_run_a_responses_agent(spark: Any, model_uri: str) -> None:
    """Why `batch --spark --model-uri` loads the model per executor instead of using spark_udf.

    MLflow's ResponsesAgent pyfunc answers only a DataFrame's first row and returns one response
    dict, which spark_udf cannot frame. When this test fails, spark_udf can run the agent.
    """
    from pyspark.sql import functions as F

    questions = spark.createDataFrame([("How is the index stored?",), ("What is BM25?",)], "question string")
    message = F.struct(F.lit("user").alias("role"), F.col("question").alias("content"))
    requests = questions.withColumn("input", F.array(message))
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="string")
    with pytest.raises(Exception, match="same length"):
        requests.withColumn("answer", udf(F.struct("input"))).collect()


@pytest.fixture
def refusing_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    """An OpenAI-compatible model that fails every question mentioning 'forbidden'."""

    def respond(body: dict[str, Any]) -> StubReply:
        if "forbidden" in json.dumps(body["messages"][-1]):
            return StubReply(status=400, error="this question is refused", retry_after_ms=None)
        return StubReply(content="The index is a folder [1].")

    with OpenAIStub(responder=respond) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield stub


def _stub_config(agent_yaml: Path, tmp_path: Path) -> Path:
    config = tmp_path / "stub.yaml"
    config.write_text(
        agent_yaml.read_text(encoding="utf-8") + "llm: openai:stub-model\nllm_options:\n  max_retries: 0\n",
        encoding="utf-8",
    )
    return config


_MIXED = ["How is the index stored?", "A forbidden question", "", "How are agents logged?", "forbidden again"]


def test_a_failing_row_is_an_error_never_an_answer(
    refusing_stub: OpenAIStub, agent_yaml: Path, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "q.jsonl", [{"id": 10 + i, "question": q} for i, q in enumerate(_MIXED)])
    config = _stub_config(agent_yaml, tmp_path)
    result = invoke("batch", source, "--config", config, "-o", tmp_path / "out.parquet", "--no-trace")
    assert result.exit_code == 1, result.output
    assert "3 of 5 rows failed" in result.output and "--allow-errors" in result.output
    assert len(refusing_stub.requests) == 4  # the empty question is never asked
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out["id"]) == [10, 11, 12, 13, 14]
    failed = out[out["error"].notna()]
    assert list(failed["id"]) == [11, 12, 14]
    assert (failed["answer"] == "").all() and all(len(s) == 0 for s in failed["sources"])
    assert "this question is refused" in failed["error"].iloc[0] and "empty" in failed["error"].iloc[1]
    assert list(out[out["error"].isna()]["answer"]) == ["The index is a folder [1]."] * 2
    allowed = invoke(
        "batch", source, "--config", config, "-o", tmp_path / "out.csv", "--allow-errors", "--no-trace"
    )
    assert allowed.exit_code == 0 and "3 of 5 rows failed" in allowed.output
    assert pd.read_csv(tmp_path / "out.csv")["error"].notna().sum() == 3


@pytest.mark.slow
def test_a_failing_row_on_spark_keeps_every_row(
    spark: Any, refusing_stub: OpenAIStub, agent_yaml: Path, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "q.jsonl", [{"id": f"r{i}", "question": q} for i, q in enumerate(_MIXED)])
    config = _stub_config(agent_yaml, tmp_path)
    result = invoke("batch", source, "--config", config, "--spark", "-o", tmp_path / "out", "--no-trace")
    assert result.exit_code == 1 and "3 of 5 rows failed" in result.output, result.output
    assert len(refusing_stub.requests) == 4  # each question asked once (the empty one never)
    out = pd.read_parquet(tmp_path / "out")  # a folder of Parquet files
    assert list(out["id"]) == [f"r{i}" for i in range(5)]
    assert list(out["error"].notna()) == [False, True, True, False, True]
    assert "this question is refused" in out["error"][1]  # the stub's URL reached the executors


def test_a_delta_table_is_read_through_deltalake(agent_yaml: Path, tmp_path: Path, tracing_off: None) -> None:
    from deltalake import write_deltalake

    write_deltalake(
        str(tmp_path / "questions"), pd.DataFrame({"id": [7, 8], "question": shipped_questions(2)})
    )
    result = invoke("batch", tmp_path / "questions", "--config", agent_yaml, "-o", tmp_path / "a.jsonl")
    assert result.exit_code == 0, result.output
    out = pd.read_json(tmp_path / "a.jsonl", lines=True)
    assert list(out["id"]) == [7, 8] and out["error"].isna().all() and (out["answer"].str.len() > 0).all()


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (
            lambda p: write_jsonl(p / "q.jsonl", [{"text": "x"}]),
            [],
            "has no column 'question' (columns: text)",
        ),
        (
            lambda p: write_jsonl(p / "q.jsonl", [{"question": "x"}]),
            ["--id-column", "key"],
            "has no column 'key'",
        ),
        (lambda p: write_jsonl(p / "q.jsonl", []), [], "is empty"),
        (lambda p: p / "missing.jsonl", [], "No input at"),
        (
            lambda p: write_jsonl(p / "q.txt", [{"question": "x"}]),
            [],
            "must be .jsonl, .json, .csv or .parquet",
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    agent_yaml: Path, tmp_path: Path, make_input: Any, extra: list[str], message: str
) -> None:
    result = invoke("batch", make_input(tmp_path), "--config", agent_yaml, "-o", tmp_path / "a.jsonl", *extra)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize(
    ("agent", "output", "message"),
    [
        ([], "a.jsonl", "exactly one of --config FILE or --model-uri URI"),
        (["--config", "CONFIG", "--model-uri", "models:/x/1"], "a.jsonl", "exactly one of --config"),
        (["--config", "CONFIG"], "a.xlsx", "must end in .jsonl, .csv or .parquet"),
    ],
)
def test_bad_options_are_one_clear_line(
    agent_yaml: Path, tmp_path: Path, agent: list[str], output: str, message: str
) -> None:
    source = write_jsonl(tmp_path / "q.jsonl", [{"question": "x"}])
    args = [str(agent_yaml) if a == "CONFIG" else a for a in agent]
    started = time.perf_counter()
    result = invoke("batch", source, *args, "-o", tmp_path / output)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert time.perf_counter() - started < 5  # refused before any agent is built
