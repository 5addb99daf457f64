"""What the MLflow agent adds per request over a bare LangGraph graph doing the same work.

    python benchmarks/agent_overhead.py [--requests 200] [--model scripted|offline]

One retriever (a LocalIndex over the docs ragworks ships, hashing embeddings) and one chat model (the
scripted model, which answers instantly, or the offline extractive model) are run:

    (a) bare graph       a minimal StateGraph: retrieve (retriever.invoke) -> generate (llm.invoke)
    (a) bare stream      the same graph streamed by LangGraph, stream_mode=["messages", "updates"]
                         (token deltas through LangGraph's callbacks), all chunks consumed
    (a) bare custom      the same graph whose generate node streams the model itself and writes each
                         piece with LangGraph's stream writer, stream_mode=["custom", "updates"]
    (b) predict          RagResponsesAgent.predict, tracing off, then on (SQLite store in a temp dir)
    (c) predict_stream   RagResponsesAgent.predict_stream, all events consumed, tracing off and on

After a warm-up, each variant answers `--requests` requests from a fixed list of questions; the
variants take turns request by request, so load from other processes falls on all of them alike.
Prints the median and p90 per request in ms, each median's ratio to (a), and predict_stream's
ratio to predict. Traces are exported by
MLflow's background queue (its default), so "tracing on" times the request path, not the export.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

QUESTIONS = (
    "What is ragworks?",
    "How does hybrid search work?",
    "How do I look at the traces of my agent?",
    "How do I log an agent as an MLflow model?",
    "How do I serve the agent?",
    "Which embeddings can an index use?",
    "What does the offline model do?",
    "How are chunks given ids?",
)
WARMUP = 10


class BareState(TypedDict, total=False):
    question: str
    documents: list[Document]
    answer: str


def bare_graph(retriever: BaseRetriever, llm: BaseChatModel, *, write: bool = False) -> Any:
    """The same two steps as the agent's graph, with nothing around them (Any: a compiled StateGraph).

    With `write`, generate streams the model and writes each piece to LangGraph's custom stream.
    """

    def retrieve(state: BareState) -> BareState:
        return {"documents": retriever.invoke(state["question"])}

    def generate(state: BareState) -> BareState:
        context = "\n\n".join(f"[{n}] {d.page_content}" for n, d in enumerate(state["documents"], 1))
        prompt = [SystemMessage("Answer from the sources; cite them as [n]."), HumanMessage(context)]
        prompt.append(HumanMessage(state["question"]))
        if not write:
            return {"answer": str(llm.invoke(prompt).content)}
        writer, pieces = get_stream_writer(), []
        for chunk in llm.stream(prompt):
            writer(chunk.content)
            pieces.append(str(chunk.content))
        return {"answer": "".join(pieces)}

    graph = StateGraph(BareState)
    graph.add_node("retrieve", retrieve)
    graph.add_node("generate", generate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "generate")
    graph.add_edge("generate", END)
    return graph.compile()


def timed(variants: dict[str, Callable[[str], object]], requests: int) -> dict[str, list[float]]:
    """Milliseconds per request for each variant, after a warm-up.

    The variants take turns request by request, so a busy machine slows them all alike.
    """
    for i in range(WARMUP):
        for call in variants.values():
            call(QUESTIONS[i % len(QUESTIONS)])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(requests):
        question = QUESTIONS[i % len(QUESTIONS)]
        for name, call in variants.items():
            start = time.perf_counter()
            call(question)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def make_parts(workdir: Path, model: str) -> tuple[BaseRetriever, BaseChatModel]:
    from ragworks.agents.offline import OfflineChatModel
    from ragworks.quickstart import prepare
    from ragworks.retrieval.registry import get_retriever
    from ragworks.testing import ScriptedChatModel

    index_dir, _ = prepare(workdir, embeddings="hashing")
    retriever = get_retriever({"type": "local", "index": str(index_dir), "k": 4})
    if model == "offline":
        return retriever, OfflineChatModel()
    answer = "ragworks builds, serves and evaluates retrieval-augmented agents on MLflow [1]."
    return retriever, ScriptedChatModel(responses=[AIMessage(answer)], repeat_last=True, usage=True)


def run(requests: int, model: str) -> dict[str, list[float]]:
    import mlflow
    from mlflow.tracing.provider import trace_disabled
    from mlflow.types.responses import ResponsesAgentRequest

    logging.getLogger("mlflow").setLevel(logging.WARNING)

    from ragworks.agents.graphs import build_rag_graph
    from ragworks.agents.responses_agent import RagResponsesAgent

    with tempfile.TemporaryDirectory(prefix="ragworks-bench-") as tmp:
        retriever, llm = make_parts(Path(tmp), model)
        bare = bare_graph(retriever, llm)
        bare_writing = bare_graph(retriever, llm, write=True)
        agent = RagResponsesAgent(build_rag_graph(retriever, llm))

        def request(question: str) -> ResponsesAgentRequest:
            return ResponsesAgentRequest.model_validate({"input": [{"role": "user", "content": question}]})

        def predict(question: str) -> object:
            return agent.predict(request(question))

        def stream(question: str) -> object:
            return list(agent.predict_stream(request(question)))

        variants: dict[str, Callable[[str], object]] = {
            "(a) bare graph": lambda q: bare.invoke({"question": q}),
            "(a) bare stream (messages mode)": lambda q: list(
                bare.stream({"question": q}, stream_mode=["messages", "updates"])
            ),
            "(a) bare custom (stream writer)": lambda q: list(
                bare_writing.stream({"question": q}, stream_mode=["custom", "updates"])
            ),
            "(b) predict, tracing off": trace_disabled(predict),
            "(c) predict_stream, tracing off": trace_disabled(stream),
            "(b) predict, tracing on": predict,
            "(c) predict_stream, tracing on": stream,
        }
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.create_experiment("agent-overhead", artifact_location=(Path(tmp) / "artifacts").as_uri())
        mlflow.set_experiment("agent-overhead")
        results = timed(variants, requests)
        mlflow.flush_trace_async_logging()
        traces = len(mlflow.search_traces(return_type="list", max_results=10_000))
        print(f"traces recorded while tracing was on: {traces} (expected {2 * (requests + WARMUP)})")
        return results


def report(results: dict[str, list[float]], *, requests: int, model: str) -> None:
    base = statistics.median(results["(a) bare graph"])
    print(f"\n{requests} requests per variant, model={model}, index=shipped docs (hashing embeddings)")
    print(f"{'variant':<34}{'median ms':>10}{'p90 ms':>10}{'x (a)':>8}")
    for name, times in results.items():
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"{name:<34}{median:>10.2f}{p90:>10.2f}{median / base:>8.2f}")
    for tracing in ("off", "on"):
        predict = statistics.median(results[f"(b) predict, tracing {tracing}"])
        stream = statistics.median(results[f"(c) predict_stream, tracing {tracing}"])
        print(f"predict_stream / predict, tracing {tracing}: {stream / predict:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", choices=("scripted", "offline"), default="scripted")
    args = parser.parse_args()
    report(run(args.requests, args.model), requests=args.requests, model=args.model)


if __name__ == "__main__":
    main()
