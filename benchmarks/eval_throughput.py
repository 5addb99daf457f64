"""Eval throughput: 200 rows judged by a stub LLM judge that answers after 200 ms.

Baselines, one row at a time with no pool:
- "sequential, same work": per row, the agent call traced into the same MLflow store, its judge
  call (no cache) and the feedback logged on the trace, i.e. `run_suite`'s per-row work without
  the pool and without its once-per-run costs (run, metrics, table, report);
- "sequential judge only": per row, just the judge call (the issue's original baseline).
Then the judge's bounded pool without MLflow (the ceiling a pool of `--pool` allows), and
`run_suite` (the full MLflow evaluation: traces, assessments, artifacts) twice, the second time
with every judgement from the cache. The stub judge runs in a process of its own (a real judge is
another machine), and both the sequential loop and `run_suite` get an untimed 8-row warm-up
first. `--legacy` also times `run_suite(prefetch=False)` (the agent and the scorers inside
`mlflow.genai.evaluate`'s harness). Everything runs on 127.0.0.1 with a temp MLflow store.

    python benchmarks/eval_throughput.py [--rows 200] [--latency 0.2] [--pool 8] [--legacy]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow.entities import Document, SpanType

from ragworks.eval.judges import get_judge
from ragworks.eval.runner import make_predict_fn, run_suite
from ragworks.eval.scorers import make_scorer
from ragworks.eval.suite import EvalSuite
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

WARMUP_ROWS = 8
"""Rows of the untimed warm-up run of each path."""


class SlowJudge:
    """Stub responder: a valid relevance verdict after `latency` seconds; counts requests and peak load.

    The counters are shared memory, as the stub runs in a process of its own (a real judge is
    another machine: its HTTP handling must not take this process's CPU).
    """

    def __init__(self, latency: float, counters: Any) -> None:  # Any: multiprocessing Array("i", 3)
        self.latency = latency
        self.counters = counters  # active, peak, requests

    def __call__(self, body: dict[str, Any]) -> StubReply:
        with self.counters.get_lock():
            self.counters[0] += 1
            self.counters[2] += 1
            self.counters[1] = max(self.counters[1], self.counters[0])
        time.sleep(self.latency)
        with self.counters.get_lock():
            self.counters[0] -= 1
        return StubReply(content=json.dumps({"rating": 5, "noncommittal": False, "rationale": "on topic"}))

    @property
    def requests(self) -> int:
        """Judge HTTP requests so far."""
        return int(self.counters[2])

    @property
    def peak(self) -> int:
        """Most requests in flight at once since the last reset."""
        return int(self.counters[1])

    def reset_peak(self) -> None:
        """Start a new peak measurement."""
        self.counters[1] = 0


def _serve_stub(latency: float, counters: Any, urls: Any, stop: Any) -> None:
    """The stub judge's process: serve until `stop` is set."""
    with OpenAIStub(responder=SlowJudge(latency, counters)) as stub:
        urls.put(stub.base_url)
        stop.wait()


@contextmanager
def stub_judge(latency: float) -> Iterator[tuple[str, SlowJudge]]:
    """The stub judge in its own process: (base URL, a SlowJudge view of its counters)."""
    ctx = multiprocessing.get_context("spawn")
    counters, urls, stop = ctx.Array("i", 3), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve_stub, args=(latency, counters, urls, stop), daemon=True)
    proc.start()
    try:
        yield urls.get(timeout=120), SlowJudge(latency, counters)
    finally:
        stop.set()
        proc.join(timeout=10)


@mlflow.trace(span_type=SpanType.RETRIEVER)
def _retrieve(question: str) -> list[dict[str, Any]]:
    return [
        Document(page_content=f"Notes about {question}", metadata={"doc_uri": "notes.md"}, id="c1").to_dict()
    ]


def agent(request: dict[str, Any]) -> dict[str, Any]:
    """A trivial agent: one retrieval, an answer that repeats the question."""
    question = request["input"][-1]["content"]
    _retrieve(question)
    text = f"Here is what the notes say about {question}."
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


def _judge_row(judge: Any, question: str) -> float:
    # The judge work of one row (the same call run_suite's scorer makes), without the agent or MLflow.
    return float(judge.answer_relevance(question, f"Here is what the notes say about {question}.").score)


def _sequential_same_work(suite: EvalSuite, judge: Any) -> float:
    """Seconds for run_suite's per-row work done one row at a time (see the module docstring).

    Traces export the way MLflow exports them by default (asynchronously), so the feedback is
    logged once they are written: after the loop, still one row at a time."""
    predict, scorer = make_predict_fn(agent), make_scorer("answer_relevance", judge=judge)
    mlflow.set_experiment("sequential")
    start = time.perf_counter()
    with mlflow.start_run():
        judged = []
        for row in suite.rows:
            outputs = predict(**row.inputs)
            feedback = scorer.run(inputs=row.inputs, outputs=outputs)
            judged.append((mlflow.get_last_active_trace_id(thread_local=True), feedback))
        mlflow.flush_trace_async_logging()
        for trace_id, feedback in judged:
            mlflow.log_assessment(trace_id, feedback)
    return time.perf_counter() - start


def _line(label: str, rows: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<30}: {rows} rows in {seconds:6.1f}s = {rows / seconds:6.2f} rows/s{extra}")


def main(argv: list[str] | None = None) -> int:
    """Print rows/s for the sequential loop and the runner, the speed-up, and the cached re-run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--legacy", action="store_true", help="also time run_suite(prefetch=False)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ragworks-eval-bench-"))
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.create_experiment("sequential", artifact_location=(tmp / "artifacts").as_uri())  # not ./mlruns
    rows = [{"inputs": {"question": f"question {i} about topic {i % 17}"}} for i in range(args.rows)]
    suite = EvalSuite.model_validate({"name": "throughput", "rows": rows})
    warm = EvalSuite.model_validate({"name": "warm-up", "rows": rows[:WARMUP_ROWS]})
    with stub_judge(args.latency) as (base_url, slow):
        os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = base_url, "sk-bench"
        # One-time costs of the process (imports; MLflow's evaluate imports databricks-sdk on first
        # use, about 1.2 s here) fall on a short untimed run of each path, not on the timed ones.
        _sequential_same_work(warm, get_judge("openai:bench-judge", cache=False))
        warm_judge = get_judge("openai:bench-judge", cache=False)
        run_suite(agent, warm, scorers=["answer_relevance"], judge=warm_judge)
        seq_s = _sequential_same_work(suite, get_judge("openai:bench-judge", cache=False))
        _line("sequential, same work", args.rows, seq_s, " (agent + trace, judge call, assessment)")
        seq_judge = get_judge("openai:bench-judge", cache=False)
        start = time.perf_counter()
        for row in suite.rows:
            _judge_row(seq_judge, row.inputs["question"])
        judge_s = time.perf_counter() - start
        _line("sequential judge only", args.rows, judge_s, " (judge calls alone)")
        pool_judge = get_judge("openai:bench-judge", cache=False, concurrency=args.pool)
        slow.reset_peak()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.pool) as pool:
            list(pool.map(lambda r: _judge_row(pool_judge, r.inputs["question"]), suite.rows))
        pool_s = time.perf_counter() - start
        _line(
            "judge pool, no MLflow",
            args.rows,
            pool_s,
            f" ({judge_s / pool_s:.2f}x the judge-only loop; peak in flight {slow.peak})",
        )
        cache = tmp / "judge-cache.sqlite"
        results = []
        runs = [("run_suite (cold cache)", True), ("run_suite (warm cache)", True)]
        if args.legacy:
            runs = [("legacy harness (cold cache)", False), ("legacy harness (warm cache)", False), *runs]
        for label, prefetch in runs:
            if label.startswith("run_suite (cold"):
                cache = tmp / "judge-cache-2.sqlite"
            judge = get_judge("openai:bench-judge", cache=cache, concurrency=args.pool)
            before = slow.requests
            slow.reset_peak()
            start = time.perf_counter()
            result = run_suite(
                agent,
                suite,
                scorers=["answer_relevance"],
                judge=judge,
                concurrency=args.pool,
                prefetch=prefetch,
            )
            wall = time.perf_counter() - start
            results.append((label, wall, result))
            stats = result.judge_stats
            _line(
                label,
                args.rows,
                wall,
                f"; judge HTTP calls {slow.requests - before}, cache hits {stats['cache_hits']}, "
                f"peak in flight {slow.peak}",
            )
    cold, warm = results[-2], results[-1]
    for name, base in (("sequential, same work", seq_s), ("sequential judge only", judge_s)):
        speedup = base / cold[1]
        print(
            f"run_suite speed-up vs {name}: {speedup:.2f}x with a pool of {args.pool} "
            f"({speedup / args.pool:.0%} of the pool size; goal >= 80%)"
        )
    floor = args.rows / warm[1]
    print(f"MLflow floor (warm cache, judge cost 0): {floor:.2f} rows/s caps run_suite on this machine")
    stats = warm[2].judge_stats
    fully_cached = stats["calls"] == 0 and stats["cache_hits"] == args.rows
    print(f"second run fully from cache: {fully_cached} ({stats['cache_hits']} hits, {stats['calls']} calls)")
    return 0 if fully_cached else 1


if __name__ == "__main__":
    sys.exit(main())
