"""The runner's fast path: agent and judge run in our pools, `evaluate` gets traces and results."""

from __future__ import annotations

from typing import Any

import mlflow
import pytest
from mlflow.entities import Document, Feedback, SpanType

from ragworks.eval import _prefetch
from ragworks.eval.runner import run_suite
from ragworks.eval.suite import EvalSuite

SUITE = EvalSuite.model_validate(
    {
        "name": "speed",
        "rows": [
            {"inputs": "What is alpha?", "expectations": {"expected_doc_ids": ["alpha.md"]}},
            {"inputs": "What is beta?", "expectations": {"expected_doc_ids": ["beta.md"]}},
            {"inputs": "What is gamma?", "tags": {"topic": "greek"}},
        ],
    }
)


@mlflow.trace(span_type=SpanType.RETRIEVER)
def _retrieve(question: str) -> list[dict[str, Any]]:
    name = question.split()[-1].rstrip("?")
    doc = Document(page_content=f"{name} is a letter.", metadata={"doc_uri": f"{name}.md"}, id=name)
    return [doc.to_dict()]


def agent(request: dict[str, Any]) -> dict[str, Any]:
    question = request["input"][-1]["content"]
    if "gamma" in question:
        raise RuntimeError("agent down")
    _retrieve(question)
    text = f"{question.split()[-1].rstrip('?')} is a letter."
    content = [{"type": "output_text", "text": text}]
    return {"output": [{"type": "message", "role": "assistant", "id": "m", "content": content}]}


@pytest.mark.parametrize("prefetch", [True, False])
def test_both_paths_log_the_same_assessments_on_the_agent_traces(prefetch: bool) -> None:
    mlflow.set_experiment(f"speed-{prefetch}")
    result = run_suite(
        agent,
        SUITE,
        scorers=["faithfulness", "answer_relevance", "recall_at_k"],
        judge="offline:lexical",
        prefetch=prefetch,
        concurrency=2,
    )
    assert result.metrics["recall_at_k"].mean == 1.0 and result.metrics["recall_at_k"].n == 2
    table = result.table.set_index("question")
    assert table.loc["What is alpha?", "faithfulness"] == 1.0  # the answer restates the chunk
    assert table.loc["What is beta?", "answer_relevance"] > 0.5
    traces = mlflow.search_traces(run_id=result.run_id, return_type="list")
    # The agent traces itself, so a row that fails before its first span has no trace through
    # evaluate's predict_fn; the fast path logs a minimal error trace for it (evaluate takes traces
    # for every row or for none).
    assert len(traces) == (3 if prefetch else 2)
    # A row with no stored trace is reported, and fails the run: its assessments are missing.
    lost = [e for e in result.errors if e.startswith("traces:")]
    assert lost == ([] if prefetch else [lost[0]]) and (prefetch or "1 of 3 rows" in lost[0])
    assert not result.passed  # the gamma row's agent failed
    if prefetch:  # its minimal trace records the failure
        assert result.errors[0].startswith("predictions: the agent failed on 1 of 3 rows (first: trace tr-")
    for trace in traces:
        names = {a.name for a in trace.info.assessments}
        if "gamma" in (trace.info.request_preview or ""):
            assert trace.info.tags.get("topic") == "greek"
            continue
        assert {"faithfulness", "answer_relevance", "recall_at_k", "expected_doc_ids"} <= names
        assert trace.search_spans(span_type=SpanType.RETRIEVER)


def test_the_judge_scorers_run_once_per_row_outside_evaluate(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class CountingJudge:
        name = "offline:counting"

        def answer_relevance(self, question: str, answer: str) -> Any:
            from ragworks.eval.judges import Judgement

            calls.append(question)
            return Judgement(score=1.0, rationale="ok")

    seen_scorers: list[list[str]] = []
    real = mlflow.genai.evaluate

    def spy(**kwargs: Any) -> Any:
        seen_scorers.append([s.name for s in kwargs["scorers"]])
        assert "predict_fn" not in kwargs and all("trace" in r for r in kwargs["data"][:2])
        return real(**kwargs)

    monkeypatch.setattr(mlflow.genai, "evaluate", spy)
    mlflow.set_experiment("speed-counting")
    result = run_suite(agent, SUITE, scorers=["answer_relevance"], judge=CountingJudge(), concurrency=2)
    assert sorted(calls) == ["What is alpha?", "What is beta?", "What is gamma?"]  # once each
    assert seen_scorers == [["answer_relevance"]]
    assert result.metrics["answer_relevance"].n == 3


def test_memoised_scorer_waits_for_the_judge_pool_reraises_errors_and_falls_back() -> None:
    from mlflow.genai.scorers import scorer

    live: list[str] = []

    @scorer(name="s")
    def original(outputs: Any) -> Feedback:
        live.append(outputs)
        if outputs == "boom":
            raise ValueError("judge broke")
        return Feedback(name="s", value=1.0 if outputs == "a" else 0.0)

    class _Trace:
        def __init__(self, trace_id: str) -> None:
            self.info = type("Info", (), {"trace_id": trace_id})()

    with _prefetch.JudgePool([original], workers=2) as judging:
        for outputs, trace_id in (("a", "t1"), ("boom", "t2")):
            record = {"inputs": {}, "outputs": outputs, "trace": _Trace(trace_id)}
            judging.submit(_prefetch.Row(record=record))
        judging.submit(_prefetch.Row(record={"inputs": {}, "outputs": "x"}))  # no trace: left to evaluate
        memo = _prefetch.memoised(original, judging)
        assert memo.name == "s"
        assert memo.run(inputs={}, outputs="ignored", trace=_Trace("t1")).value == 1.0
        with pytest.raises(ValueError, match="judge broke"):
            memo.run(inputs={}, outputs="ignored", trace=_Trace("t2"))
        assert memo.run(inputs={}, outputs="c", trace=_Trace("t3")).value == 0.0  # scored live
        assert judging.take("s", "t1") is None  # each result is handed out once
    assert sorted(live) == ["a", "boom", "c"]


def test_batched_trace_refresh_gives_results_their_assessments_and_keeps_their_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.genai.scorers import scorer

    @scorer
    def const(outputs: Any) -> Feedback:
        return Feedback(value=1.0)

    searches: list[dict[str, Any]] = []
    real_search = mlflow.search_traces

    def spy(*args: Any, **kwargs: Any) -> Any:
        searches.append(kwargs)
        return real_search(*args, **kwargs)

    monkeypatch.setattr(mlflow, "search_traces", spy)
    mlflow.set_experiment("speed-refresh")
    with mlflow.start_run():
        ids = []
        for question in ("What is alpha?", "What is beta?"):
            _retrieve(question)
            ids.append(mlflow.get_last_active_trace_id())
        mlflow.flush_trace_async_logging()
        traces = [mlflow.get_trace(trace_id) for trace_id in ids]
        with _prefetch.tuned_harness(unthrottled=False):
            evaluation = mlflow.genai.evaluate(data=traces, scorers=[const])
    assert any(kw.get("include_spans") is False for kw in searches)  # the one batched refresh
    frame = evaluation.result_df
    for spans, assessments in zip(frame["spans"], frame["assessments"], strict=True):
        assert len(spans) == 1
        assert "const" in {a["assessment_name"] for a in assessments}


def test_the_stock_path_bounds_its_predictions_to_the_concurrency() -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from ragworks.eval._targets import bounded

    active, peak, lock = 0, 0, threading.Lock()

    def slow(**inputs: Any) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return str(inputs["i"])

    predict = bounded(slow, 2)
    with ThreadPoolExecutor(8) as pool:  # MLflow's harness runs more threads than we allow
        assert list(pool.map(lambda i: predict(i=i), range(16))) == [str(i) for i in range(16)]
    assert peak == 2
