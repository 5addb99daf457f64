"""The threads streamed graph runs use: reused while busy, gone once idle, so bursts leave none behind."""

from __future__ import annotations

import threading
import time
from typing import Any

from ragworks.agents import RagResponsesAgent
from ragworks.agents._worker import IDLE_EXIT_S, _StreamThreads
from ragworks.agents.graphs import build_rag_graph
from ragworks.retrieval import get_retriever
from ragworks.testing import ScriptedChatModel

QUESTION = {"input": [{"role": "user", "content": "What is in the docs?"}]}


def _alive(prefix: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith(prefix))


def _wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_burst_starts_a_thread_per_run_at_once_and_they_leave_when_idle() -> None:
    pool = _StreamThreads(max_threads=8, idle_exit_s=0.1, name="test-burst")
    release, started = threading.Event(), threading.Semaphore(0)

    def run() -> None:
        started.release()
        release.wait(5)

    for _ in range(6):
        pool.submit(run)
    assert all(started.acquire(timeout=5) for _ in range(6))  # six at once: none waits behind another
    assert _alive("test-burst") == 6
    release.set()
    assert _wait_until(lambda: _alive("test-burst") == 0)
    done = threading.Event()
    pool.submit(done.set)  # an emptied pool starts a thread again
    assert done.wait(5)


def test_runs_one_after_another_reuse_one_thread() -> None:
    pool = _StreamThreads(max_threads=8, idle_exit_s=5.0, name="test-reuse")
    names: list[str] = []
    for _ in range(5):
        done = threading.Event()
        pool.submit(lambda done=done: (names.append(threading.current_thread().name), done.set()))
        assert done.wait(5)
        time.sleep(0.01)  # the worker is back waiting
    assert len(set(names)) == 1


def test_concurrent_streams_leave_no_stream_threads_behind(docs_index: str) -> None:
    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    model = ScriptedChatModel(responses=["It is a folder of files [1]."], repeat_last=True)
    agent = RagResponsesAgent(build_rag_graph(retriever, model, condense="none"))
    results: list[int] = []

    def stream() -> None:
        results.append(len(list(agent.predict_stream(QUESTION))))

    clients = [threading.Thread(target=stream) for _ in range(8)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert len(results) == 8 and all(n > 0 for n in results)
    assert _wait_until(lambda: _alive("ragworks-stream") == 0, timeout=IDLE_EXIT_S + 5)
