"""Eval throughput: 200 rows judged by a stub LLM judge that answers after 200 ms.

Compares a sequential loop of judge calls with the judge's bounded pool and with `run_suite` (the
full MLflow evaluation: agent traces, assessments, artifacts), then re-runs the suite to show every
judgement comes from the cache. Everything runs on 127.0.0.1 with a temp MLflow store.

    python benchmarks/eval_throughput.py [--rows 200] [--latency 0.2] [--pool 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow.entities import Document, SpanType

from ragworks.eval.judges import get_judge
from ragworks.eval.runner import run_suite
from ragworks.eval.suite import EvalSuite
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply


class SlowJudge:
    """Stub responder: a valid relevance verdict after `latency` seconds; tracks peak concurrency."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.active = self.peak = self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> StubReply:
        with self._lock:
            self.active += 1
            self.requests += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.latency)
        with self._lock:
            self.active -= 1
        return StubReply(content=json.dumps({"rating": 5, "noncommittal": False, "rationale": "on topic"}))


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


def main(argv: list[str] | None = None) -> int:
    """Print rows/s for the sequential loop and the runner, the speed-up, and the cached re-run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--pool", type=int, default=8)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ragworks-eval-bench-"))
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    rows = [{"inputs": {"question": f"question {i} about topic {i % 17}"}} for i in range(args.rows)]
    suite = EvalSuite.model_validate({"name": "throughput", "rows": rows})
    slow = SlowJudge(args.latency)
    with OpenAIStub(responder=slow) as stub:
        os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = stub.base_url, "sk-bench"
        seq_judge = get_judge("openai:bench-judge", cache=False)
        start = time.perf_counter()
        for row in suite.rows:
            _judge_row(seq_judge, row.inputs["question"])
        seq_s = time.perf_counter() - start
        print(f"sequential judge loop : {args.rows} rows in {seq_s:6.1f}s = {args.rows / seq_s:6.2f} rows/s")
        pool_judge = get_judge("openai:bench-judge", cache=False, concurrency=args.pool)
        slow.peak, start = 0, time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.pool) as pool:
            list(pool.map(lambda r: _judge_row(pool_judge, r.inputs["question"]), suite.rows))
        pool_s = time.perf_counter() - start
        print(
            f"judge pool, no MLflow : {args.rows} rows in {pool_s:6.1f}s = {args.rows / pool_s:6.2f} rows/s "
            f"({seq_s / pool_s:.2f}x, {seq_s / pool_s / args.pool:.0%} of the pool size; "
            f"peak in flight {slow.peak})"
        )
        cache = tmp / "judge-cache.sqlite"
        results = []
        for label in ("runner (cold cache)", "runner (warm cache)"):
            judge = get_judge("openai:bench-judge", cache=cache, concurrency=args.pool)
            before, slow.peak = slow.requests, 0
            start = time.perf_counter()
            result = run_suite(agent, suite, scorers=["answer_relevance"], judge=judge, concurrency=args.pool)
            wall = time.perf_counter() - start
            results.append((wall, result))
            stats = result.judge_stats
            print(
                f"{label:<22}: {args.rows} rows in {wall:6.1f}s = {args.rows / wall:6.2f} rows/s; "
                f"judge HTTP calls {slow.requests - before}, cache hits {stats['cache_hits']}, "
                f"peak in flight {slow.peak}"
            )
    speedup = seq_s / results[0][0]
    print(
        f"run_suite speed-up vs sequential: {speedup:.2f}x with a pool of {args.pool} "
        f"({speedup / args.pool:.0%} of the pool size; goal >= 80%)"
    )
    floor = args.rows / results[1][0]
    print(
        f"MLflow harness floor (warm cache, judge cost 0): {floor:.2f} rows/s caps run_suite on this machine"
    )
    warm = results[1][1].judge_stats
    fully_cached = warm["calls"] == 0 and warm["cache_hits"] == args.rows
    print(f"second run fully from cache: {fully_cached} ({warm['cache_hits']} hits, {warm['calls']} calls)")
    return 0 if fully_cached else 1


if __name__ == "__main__":
    sys.exit(main())
