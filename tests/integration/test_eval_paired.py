"""`--baseline` and `eval compare` pair the shipped suite's rows; `--repeats` shows a flaky judge.

A real offline agent over the shipped docs (hashing embeddings) answers the shipped suite, logged
to a temporary SQLite store. The retriever with k=1 instead of 5 cannot return both documents of
the suite's two-document questions: the paired tests flag the retrieval metrics as significant
regressions and the command exits 1; the k=5 agent against its own earlier run prints "no
regressions" and exits 0. Judged again with `--repeats`, the deterministic offline judge never
flips; an LLM judge (the OpenAI stub, scripted to change its mind on some questions) does.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from ragworks.eval.commands import register
from ragworks.eval.suite import example_suite, example_suite_path
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

RETRIEVAL = ("recall_at_k", "ndcg_at_k", "precision_at_k", "mrr")


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The quickstart's agent (offline model, local index of the shipped docs) with k=5 and k=1."""
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("paired")
    ingest([shipped_docs()], root / "index", embeddings="hashing")
    out = {}
    for k in (5, 1):
        out[k] = root / f"agent-k{k}.yaml"
        out[k].write_text(
            f"llm: offline\nagent: rag\nretriever:\n  type: local\n  index: {root / 'index'}\n  k: {k}\n",
            encoding="utf-8",
        )
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tracking store for the module (creating one costs seconds); each test has its experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('paired-store')}/mlflow.db"


@pytest.fixture
def tracking(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment(request.node.name)  # the CLI logs into the active experiment
    monkeypatch.setenv("RAGWORKS_JUDGE_CACHE", str(tmp_path / "judge-cache.sqlite"))
    return store


def _cli(*args: str) -> Result:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return CliRunner().invoke(app, ["eval", *args])


def _eval(config: Path, *extra: str) -> Result:
    scorers = [arg for name in RETRIEVAL for arg in ("-s", name)]
    args = [str(example_suite_path()), "--config", str(config), "--judge", "offline:lexical"]
    return _cli(*args, *scorers, *extra)


def _last_run_id() -> str:
    return str(mlflow.search_runs(order_by=["start_time DESC"]).iloc[0].run_id)


def _verdicts(output: str) -> dict[str, str]:
    """metric -> verdict, from the paired comparison's table lines."""
    out = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in RETRIEVAL and line.endswith(("regression", "improvement", "change")):
            out[words[0]] = "no change" if line.rstrip().endswith("no change") else words[-1]
    return out


@pytest.mark.slow
def test_k1_against_k5_regresses_retrieval_and_k5_against_itself_does_not(
    configs: dict[int, Path], tracking: str
) -> None:
    base = _eval(configs[5])
    assert base.exit_code == 0, base.output
    base_run = _last_run_id()

    worse = _eval(configs[1], "--baseline", base_run)
    assert worse.exit_code == 1, worse.output
    rows = len(example_suite().rows)
    assert f"{rows} rows paired" in worse.output
    verdicts = _verdicts(worse.output)
    # recall, nDCG and precision at 5 drop on the two-document questions; the top chunk is the
    # expected document on every row with k=1 as with k=5, so MRR cannot tell them apart
    assert verdicts == {
        "recall_at_k": "regression",
        "ndcg_at_k": "regression",
        "precision_at_k": "regression",
        "mrr": "no change",
    }, worse.output
    assert "REGRESSION recall_at_k" in worse.output and "no regressions" not in worse.output
    assert "recall_at_k regressed" in worse.output and "FAILED" in worse.output
    worse_run = _last_run_id()
    logged = mlflow.get_run(worse_run).data
    assert logged.metrics["recall_at_k/diff"] < 0 and logged.metrics["recall_at_k/diff_p_value"] < 0.05
    assert logged.metrics["baseline/regressions"] == 3
    assert logged.tags["ragworks.eval.baseline"] == base_run
    assert set(logged.tags["ragworks.eval.regressions"].split(",")) == set(RETRIEVAL) - {"mrr"}
    page = mlflow.artifacts.load_text(f"runs:/{worse_run}/eval_report.html")
    assert "<h2>Paired comparison</h2>" in page and "Significant regressions: recall_at_k" in page

    same = _eval(configs[5], "--baseline", base_run)
    assert same.exit_code == 0, same.output
    assert "no regressions" in same.output and "REGRESSION" not in same.output
    assert set(_verdicts(same.output).values()) == {"no change"}
    same_run = _last_run_id()
    assert "No regressions" in mlflow.artifacts.load_text(f"runs:/{same_run}/eval_report.html")

    compared = _cli("compare", base_run, worse_run)
    assert compared.exit_code == 1 and _verdicts(compared.output) == verdicts, compared.output
    assert "regressed against" in compared.output
    itself = _cli("compare", base_run, same_run)
    assert itself.exit_code == 0 and "no regressions" in itself.output, itself.output


def test_baseline_that_is_not_an_eval_run_is_refused_before_any_row_runs(
    configs: dict[int, Path], tracking: str
) -> None:
    with mlflow.start_run() as other:
        pass
    refused = _eval(configs[5], "--baseline", other.info.run_id)
    assert refused.exit_code == 1 and "has no eval_results.json" in refused.output
    assert len(mlflow.search_runs()) == 1  # nothing ran
    missing = _cli("compare", "nope", other.info.run_id)
    assert missing.exit_code == 1 and "Cannot read run 'nope'" in missing.output


@pytest.mark.slow
def test_repeats_offline_judge_never_flips(configs: dict[int, Path], tracking: str) -> None:
    judged = ("faithfulness", "answer_relevance", "correctness")
    args = [str(example_suite_path()), "--config", str(configs[5]), "--judge", "offline:lexical"]
    result = _cli(*args, *(a for n in judged for a in ("-s", n)), "-s", "mrr", "--repeats", "3")
    assert result.exit_code == 0, result.output
    rows = len(example_suite().rows)
    for name in judged:
        assert f"repeats {name}: 3 judgings of {rows} rows, flip rate 0.000" in result.output, result.output
    assert "repeats mrr" not in result.output  # a retrieval metric is computed, not judged
    metrics = mlflow.get_run(_last_run_id()).data.metrics
    assert metrics["eval/repeats"] == 3
    for name in judged:
        assert metrics[f"{name}/flip_rate"] == 0.0 and metrics[f"{name}/within_row_var"] == 0.0


def _flaky(seen: Counter[str]) -> Any:
    """A judge that rates the answers to questions of even length 5 and 2 in turn, the others 5."""

    def responder(body: dict[str, Any]) -> StubReply:
        prompt = json.dumps(body["messages"])
        seen[prompt] += 1
        question = next(q for q in _QUESTIONS if json.dumps(q)[1:-1] in prompt)
        flaky = len(question) % 2 == 0 and seen[prompt] % 2 == 0
        return StubReply(content=json.dumps({"rating": 2 if flaky else 5, "noncommittal": False}))

    return responder


_QUESTIONS = [str(r.inputs["question"]) for r in example_suite().rows]  # type: ignore[index]


@pytest.mark.slow
def test_repeats_show_a_flaky_llm_judge(configs: dict[int, Path], tracking: str) -> None:
    seen: Counter[str] = Counter()
    with OpenAIStub(responder=_flaky(seen)) as stub, pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_BASE_URL", stub.base_url)
        env.setenv("OPENAI_API_KEY", "test")
        args = [str(example_suite_path()), "--config", str(configs[5]), "--judge", "openai:judge"]
        result = _cli(*args, "-s", "answer_relevance", "--repeats", "4")
    assert result.exit_code == 0, result.output
    rows = len(_QUESTIONS)
    flaky = sum(len(q) % 2 == 0 for q in _QUESTIONS)
    assert 0 < flaky < rows
    assert len(stub.requests) == 4 * rows  # every repeat asked the judge: none came from the cache
    expected = f"flip rate {flaky / rows:.3f} ({flaky} rows flipped"
    assert f"repeats answer_relevance: 4 judgings of {rows} rows, {expected}" in result.output
    metrics = mlflow.get_run(_last_run_id()).data.metrics
    assert metrics["answer_relevance/flip_rate"] == pytest.approx(flaky / rows)
    # a flaky row's values are 1.0, 0.25, 1.0, 0.25: sample variance 0.1875
    assert metrics["answer_relevance/within_row_var"] == pytest.approx(0.1875 * flaky / rows)


def test_baseline_of_another_suite_is_refused_before_any_row_runs(
    configs: dict[int, Path], tracking: str, tmp_path: Path
) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"inputs": "What is BM25?", "expectations": {"expected_doc_ids": ["indexing.md"]}}\n')
    first = _cli(str(other), "--config", str(configs[5]), "--judge", "offline:lexical", "-s", "mrr")
    assert first.exit_code == 0, first.output
    refused = _eval(configs[5], "--baseline", _last_run_id())
    assert refused.exit_code == 1 and "asked none of this suite's questions" in refused.output
    assert len(mlflow.search_runs()) == 1  # only the other suite's run: nothing ran
