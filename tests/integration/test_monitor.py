"""`ragworks monitor` over a real MLflow store (temp SQLite) of traces shaped like served ones.

Each trace is an AGENT root (a Responses request and response) with a RETRIEVER child, as the
server logs them. The monitor must score exactly the traces its hash rule samples, log one
assessment per scorer on each, never score one twice (a second run is a fresh process state: all
it knows comes from the store), pick up traces added later, and fail a window under --fail-under
or when its judge cannot run.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
import typer
from click.testing import Result
from mlflow.entities import Document, SpanType
from typer.testing import CliRunner

from ragworks.eval import _monitor_traces as monitor_traces
from ragworks.eval._monitor_traces import MONITOR_KEY
from ragworks.eval.monitor import Monitor, watch
from ragworks.eval.monitor_commands import register
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply
from ragworks.trace_export import batched_export

CONTEXT = "Alpha is the first letter of the Greek alphabet."
RELEVANT = StubReply(content='{"rating": 5, "noncommittal": false, "rationale": "on topic"}')


@pytest.fixture(scope="module", autouse=True)
def store() -> Iterator[None]:
    """The suite's temp SQLite store (creating another costs seconds), every trace sampled by MLflow;
    each test has its own experiment."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    assert original.startswith("sqlite:///"), original
    mlflow.tracing.reset()
    yield
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


def _hash_sampled(trace_id: str, rate: float) -> bool:
    """The documented rule, spelled out here: sha256 of the id, first 8 bytes, over 2**64, < rate."""
    return int(hashlib.sha256(trace_id.encode()).hexdigest()[:16], 16) / 2**64 < rate


def _serve(experiment: str, n: int, *, start: int = 0, faithful: bool = True, failed: int = 0) -> list[str]:
    """Log n traces like served ones (plus `failed` in error) into the experiment; their ids."""
    mlflow.set_experiment(experiment)
    ids = []
    with batched_export():
        for i in range(start, start + n + failed):
            answer = CONTEXT if faithful or i % 2 else "Omega cheese ripens in Peruvian caves for years."
            try:
                with mlflow.start_span("predict", span_type=SpanType.AGENT) as root:
                    ids.append(root.trace_id)
                    question = {"role": "user", "content": f"What is alpha {i}?"}
                    root.set_inputs({"request": {"input": [question]}})
                    with mlflow.start_span("retrieve", span_type=SpanType.RETRIEVER) as span:
                        span.set_inputs({"query": f"alpha {i}"})
                        doc = Document(page_content=CONTEXT, metadata={"doc_uri": "alpha.md"}, id="a-1")
                        span.set_outputs([doc])
                    if i >= start + n:
                        raise RuntimeError("the model endpoint failed")
                    content = [{"type": "output_text", "text": answer}]
                    message = {"type": "message", "role": "assistant", "id": f"m{i}", "content": content}
                    root.set_outputs({"output": [message]})
            except RuntimeError:
                pass
    return ids


def _monitor(*args: str) -> Result:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return CliRunner().invoke(app, ["monitor", *args])


def _assessments(experiment: str) -> dict[str, list[Any]]:
    """The monitor's assessments on each trace of the experiment, by trace id."""
    exp = mlflow.get_experiment_by_name(experiment)
    assert exp is not None
    traces = mlflow.search_traces(locations=[exp.experiment_id], return_type="list", include_spans=False)
    return {
        t.info.trace_id: [a for a in t.info.assessments if MONITOR_KEY in (a.metadata or {})] for t in traces
    }


def _monitor_run(experiment: str) -> Any:
    exp = mlflow.get_experiment_by_name(experiment)
    assert exp is not None
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`ragworks.monitor` = 'true'")
    assert len(runs) == 1
    return mlflow.get_run(runs.iloc[0]["run_id"])


def _history(run_id: str, key: str) -> list[float]:
    metrics = mlflow.MlflowClient().get_metric_history(run_id, key)
    return [m.value for m in sorted(metrics, key=lambda m: m.step)]


@pytest.mark.slow  # 240 traces through MLflow's tracing: about 8 s on an idle 2-core machine
def test_once_scores_exactly_the_sampled_share_and_none_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor_traces, "PAGE_SIZE", 64)  # several pages of search_traces per window
    ids = _serve("monitor-200", 200)
    expected = {t for t in ids if _hash_sampled(t, 0.25)}
    assert 30 < len(expected) < 70  # the rule samples about a quarter
    args = ["--experiment", "monitor-200", "--sample", "0.25", "-s", "faithfulness"]
    args += ["--judge", "offline:lexical", "--once"]

    first = _monitor(*args)
    assert first.exit_code == 0, first.output
    assert f"scored {len(expected)} traces ({len(expected)} sampled of 200 read" in first.output
    logged = _assessments("monitor-200")
    assert {t for t, marks in logged.items() if marks} == expected
    for trace_id in expected:
        (mark,) = logged[trace_id]
        assert mark.name == "faithfulness" and mark.value == 1.0
        assert mark.source.source_type == "CODE" and mark.source.source_id == "offline:lexical"

    second = _monitor(*args)  # a restart: all it knows is in the store
    assert second.exit_code == 0, second.output
    n = len(expected)
    assert f"scored 0 traces ({n} sampled of 200 read, {n} scored before" in second.output
    assert _assessments("monitor-200") == logged

    new = _serve("monitor-200", 40, start=200)
    third = _monitor(*args)
    assert third.exit_code == 0, third.output
    new_expected = {t for t in new if _hash_sampled(t, 0.25)}
    marked = {t for t, marks in _assessments("monitor-200").items() if len(marks) == 1}
    assert marked == expected | new_expected
    assert all(len(m) <= 1 for m in _assessments("monitor-200").values())

    run = _monitor_run("monitor-200")
    assert _history(run.info.run_id, "traces/scored") == [len(expected), 0, len(new_expected)]
    assert _history(run.info.run_id, "faithfulness/mean") == [1.0, 1.0]  # windows that scored
    assert _history(run.info.run_id, "faithfulness/n") == [len(expected), len(new_expected)]
    assert int(run.data.tags["ragworks.monitor.windows"]) == 3


def test_fail_under_fails_the_window_and_failed_requests_are_not_graded() -> None:
    ids = _serve("monitor-low", 20, faithful=False, failed=2)
    common = ["--experiment", "monitor-low", "--sample", "1", "-s", "faithfulness"]
    common += ["--judge", "offline:lexical"]
    low = _monitor(*common, "--once", "--fail-under", "faithfulness=0.9")
    assert low.exit_code == 1, low.output
    assert "faithfulness: mean 0.5" in low.output and "< 0.9" in low.output
    assert "2 failed or unfinished" in low.output
    assert "PASSED" not in low.output
    logged = _assessments("monitor-low")
    assert sum(1 for marks in logged.values() if marks) == 20
    assert all(not logged[t] for t in ids[20:])  # the two requests in error carry no score
    run = _monitor_run("monitor-low")
    assert _history(run.info.run_id, "faithfulness/mean") == [pytest.approx(0.5, abs=0.05)]
    low_ci = _history(run.info.run_id, "faithfulness/ci_low")[0]
    high_ci = _history(run.info.run_id, "faithfulness/ci_high")[0]
    assert low_ci < 0.5 < high_ci


def test_the_watermark_alone_keeps_a_restart_from_rereading_old_traces() -> None:
    _serve("monitor-watermark", 10)
    args = ["--experiment", "monitor-watermark", "--sample", "1", "-s", "faithfulness"]
    args += ["--judge", "offline:lexical", "--once"]
    assert _monitor(*args).exit_code == 0
    again = _monitor(*args, "--lookback", "0s")
    assert again.exit_code == 0, again.output
    read = int(again.output.split(" sampled of ")[1].split(" read")[0])
    assert read < 10  # only the newest traces (those at the watermark's millisecond) are read again
    assert "scored 0 traces" in again.output


def test_traces_with_expectations_are_graded_and_the_rest_marked_done() -> None:
    ids = _serve("monitor-expect", 4)
    mlflow.log_expectation(trace_id=ids[0], name="expected_facts", value=["Alpha is the first letter"])
    args = ["--experiment", "monitor-expect", "--sample", "1", "-s", "correctness"]
    args += ["--judge", "offline:lexical", "--once"]
    first = _monitor(*args)
    assert first.exit_code == 0, first.output
    assert "scored 4 traces" in first.output and "n=1 errors=0" in first.output
    marks = _assessments("monitor-expect")
    assert [m.name for m in marks[ids[0]]] == ["correctness"] and not any(marks[t] for t in ids[1:])
    second = _monitor(*args)  # the three with nothing to grade are marked by the trace tag
    assert "scored 0 traces (4 sampled of 4 read, 4 scored before" in second.output, second.output


def test_a_trace_deleted_after_it_was_read_is_skipped_and_counted() -> None:
    ids = _serve("monitor-retention", 5)

    class Retention(Monitor):
        """Retention deletes a selected trace before the monitor fetches it."""

        def _select(self, counts: dict[str, int]) -> Any:
            todo, newest = super()._select(counts)
            mlflow.MlflowClient().delete_traces(self.experiment_id, trace_ids=[todo[0][0]])
            return todo, newest

    monitor = Retention("monitor-retention", sample=1.0, scorers=["faithfulness"], judge="offline:lexical")
    result = watch(monitor, every=None)
    assert result.passed and result.counts["scored"] == 4 and result.counts["gone"] == 1
    assert "1 deleted meanwhile" in result.summary()
    assert sum(1 for marks in _assessments("monitor-retention").values() if marks) == 4
    assert len(_assessments("monitor-retention")) == 4 and set(_assessments("monitor-retention")) < set(ids)


def test_every_runs_windows_and_new_traces_land_in_the_next() -> None:
    _serve("monitor-every", 10)
    monitor = Monitor("monitor-every", sample=1.0, scorers=["answer_relevance"], judge="offline:lexical")
    seen: list[int] = []

    def on_window(result: Any) -> None:
        seen.append(result.counts["scored"])
        if len(seen) == 1:
            _serve("monitor-every", 5, start=10)

    last = watch(monitor, every=0.05, windows=2, on_window=on_window)
    assert last.passed
    assert seen == [10, 5]
    run = mlflow.get_run(monitor.run.run_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["ragworks.monitor.watermark_ms"]) > 0


def test_traces_of_a_real_agent_are_read_as_served(docs_index: str) -> None:
    """The question, answer and retrieved passages come out of a real agent's trace, not defaults."""
    from ragworks.agents import build_agent
    from ragworks.config import AgentConfig

    mlflow.set_experiment("monitor-agent")
    agent = build_agent(AgentConfig(retriever={"type": "local", "index": docs_index, "k": 2}))
    agent.predict({"input": [{"role": "user", "content": "How are logged agents loaded back?"}]})
    mlflow.flush_trace_async_logging()
    args = ["--experiment", "monitor-agent", "--sample", "1", "-s", "context_relevance", "-s", "faithfulness"]
    result = _monitor(*args, "--judge", "offline:lexical", "--once")
    assert result.exit_code == 0, result.output
    (marks,) = [m for m in _assessments("monitor-agent").values() if m]
    by_name = {m.name: m for m in marks}
    # Both chunks of the RETRIEVER span were read (with none, it says "No passages were retrieved.").
    assert "of 2 retrieved passages are relevant" in by_name["context_relevance"].rationale
    assert by_name["faithfulness"].value > 0.5  # the offline answer quotes the retrieved chunks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_llm_judge_logs_llm_judge_assessments(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _serve("monitor-llm", 4)
    monkeypatch.setenv("RAGWORKS_JUDGE_CACHE", str(tmp_path / "judge-cache.sqlite"))
    with OpenAIStub(responder=lambda body: RELEVANT) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        args = ["--experiment", "monitor-llm", "--sample", "1", "-s", "answer_relevance"]
        result = _monitor(*args, "--judge", "openai:judge", "--once", "--fail-under", "answer_relevance=0.9")
    assert result.exit_code == 0, result.output
    marks = [m for ms in _assessments("monitor-llm").values() for m in ms]
    assert len(marks) == 4
    assert {(m.source.source_type, m.source.source_id, m.value) for m in marks} == {
        ("LLM_JUDGE", "openai:judge", 1.0)
    }


def test_a_judge_that_fails_every_call_never_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _serve("monitor-judge-down", 3)
    monkeypatch.setenv("RAGWORKS_JUDGE_CACHE", str(tmp_path / "judge-cache.sqlite"))
    failure = StubReply(status=500, error="judge overloaded", retry_after_ms=1)
    with OpenAIStub(responder=lambda body: failure) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        args = ["--experiment", "monitor-judge-down", "--sample", "1", "-s", "answer_relevance"]
        result = _monitor(*args, "--judge", "openai:judge", "--once")
    assert result.exit_code == 1, result.output
    assert "answer_relevance: 3 of 3 rows errored, no row was scored (n=0)" in result.output
    assert "PASSED" not in result.output
    marks = [m for ms in _assessments("monitor-judge-down").values() for m in ms]
    assert len(marks) == 3 and all(m.error is not None and m.value is None for m in marks)
    run = _monitor_run("monitor-judge-down")
    assert _history(run.info.run_id, "answer_relevance/errors") == [3.0]
    assert run.info.status == "FINISHED"


def test_a_dead_judge_endpoint_is_refused_before_anything_is_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    _serve("monitor-dead-judge", 2)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_free_port()}/v1")
    args = ["--experiment", "monitor-dead-judge", "--sample", "1", "-s", "faithfulness"]
    result = _monitor(*args, "--judge", "openai:judge", "--once")
    assert result.exit_code == 1, result.output
    assert "unreachable" in result.output and len(result.output.strip().splitlines()) == 1
    assert not any(_assessments("monitor-dead-judge").values())
    exp = mlflow.get_experiment_by_name("monitor-dead-judge")
    assert exp is not None and len(mlflow.search_runs([exp.experiment_id])) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "no-such-experiment"], "Experiment 'no-such-experiment' does not exist"),
        (["--experiment", "monitor-empty"], "Experiment 'monitor-empty' has no traces to monitor"),
        (["--experiment", "monitor-bad", "--sample", "0"], "--sample 0: give the share of traces"),
        (["--experiment", "monitor-bad", "--sample", "lots"], "--sample lots: give the share of traces"),
        (["--experiment", "monitor-bad", "--every", "0s"], "--every '0s': write a positive duration"),
        (["--experiment", "monitor-bad", "--every", "1m", "--once"], "Pass --every or --once, not both."),
        (["--experiment", "monitor-bad", "-s", "faithfulnes"], "did you mean 'faithfulness'?"),
        (["--experiment", "monitor-bad", "--fail-under", "mrr=1"], "--fail-under names unknown metric 'mrr'"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(args: list[str], message: str) -> None:
    if not mlflow.get_experiment_by_name("monitor-empty"):
        mlflow.create_experiment("monitor-empty")
    if not mlflow.get_experiment_by_name("monitor-bad"):
        _serve("monitor-bad", 1)
    result = _monitor(*args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    exp = mlflow.get_experiment_by_name("monitor-bad")
    assert exp is not None and len(mlflow.search_runs([exp.experiment_id])) == 0
