"""Query rewriting: multi-query fusion and HyDE, offline (deterministic) and with a scripted model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from mlflow.entities import SpanType
from pydantic import Field

from ragworks.agents.tracing import traced_retrieve
from ragworks.errors import ModelError
from ragworks.retrieval import Chunk, LocalIndex, LocalRetriever, get_retriever
from ragworks.retrieval.fusion import reciprocal_rank_fusion
from ragworks.retrieval.rewrite import RewritingRetriever, expansion_terms, offline_variants
from ragworks.testing.fakes import ScriptedChatModel

TEXTS = {
    "aspirin": "Aspirin reduces fever in adults. Aspirin is an analgesic medicine.",
    "ibuprofen": "Analgesic medicine such as ibuprofen relieves pain.",
    "violin": "Violin strings are tuned in fifths.",
    "kubernetes": "Kubernetes schedules containers onto nodes.",
}
QUERY = "does aspirin reduce fever"


@pytest.fixture
def bm25() -> LocalRetriever:
    index = LocalIndex(embeddings="none")
    index.upsert([Chunk(id=i, text=t) for i, t in TEXTS.items()])
    return LocalRetriever(index=index, k=3, mode="bm25")


class Recording(BaseRetriever):
    """Returns fixed documents and records each query text and k it was called with."""

    docs: list[Document]
    calls: list[tuple[str, int | None]] = Field(default_factory=list)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        self.calls.append((query, k))
        return self.docs[: k or 3]


def test_multi_query_offline_finds_what_the_plain_query_cannot(bm25: LocalRetriever) -> None:
    plain = [d.id for d in bm25.invoke(QUERY)]
    assert plain == ["aspirin"]  # no other chunk shares a term with the question
    retriever = RewritingRetriever(base=bm25, mode="multi-query", k=3)
    first = retriever.invoke(QUERY)
    assert [d.id for d in first][:2] == ["aspirin", "ibuprofen"]
    assert first[0].metadata["query_rewrite"] == "multi-query"
    assert [d.id for d in retriever.invoke(QUERY)] == [d.id for d in first]  # deterministic


def test_offline_variants_are_deterministic_and_add_feedback_words() -> None:
    docs = [Document(page_content=TEXTS["aspirin"])]
    assert "analgesic" in expansion_terms(QUERY, docs)
    assert "aspirin" not in expansion_terms(QUERY, docs)  # already asked
    assert offline_variants(QUERY, docs) == offline_variants(QUERY, docs)
    assert offline_variants(QUERY, docs)[0].startswith(QUERY + " ")
    assert offline_variants(QUERY, []) == []


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=0)
    assert [key for key, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(1 / 2 + 1 / 1)


def test_hyde_offline_searches_with_the_top_results_sentences() -> None:
    docs = [Document(id=i, page_content=t) for i, t in TEXTS.items()]
    base = Recording(docs=docs)
    out = RewritingRetriever(base=base, mode="hyde", k=2).invoke(QUERY)
    assert len(out) == 2
    (first, _), (second, k) = base.calls
    assert first == QUERY and k == 2
    assert second.startswith(QUERY + "\n") and "Aspirin reduces fever in adults." in second


def test_model_written_variants_are_fused() -> None:
    docs = [Document(id=i, page_content=t) for i, t in TEXTS.items()]
    base = Recording(docs=docs)
    model = ScriptedChatModel(
        responses=["1. aspirin antipyretic effect\n- fever drugs\n\naspirin antipyretic effect"]
    )
    RewritingRetriever(base=base, mode="multi-query", k=2, model=model).invoke(QUERY)
    assert [q for q, _ in base.calls] == [QUERY, "aspirin antipyretic effect", "fever drugs"]
    assert len(model.history) == 1 and QUERY in str(model.history[0][0].content)


def test_a_failing_rewrite_model_is_a_model_error() -> None:
    class Exploding(ScriptedChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("endpoint down")

    base = Recording(docs=[Document(id="x", page_content="x")])
    with pytest.raises(ModelError, match="endpoint down"):
        RewritingRetriever(base=base, mode="hyde", k=2, model=Exploding()).invoke(QUERY)


def test_registry_builds_rewriting_then_reranking(tmp_path: Path) -> None:
    index = LocalIndex(embeddings="hashing")
    index.upsert([Chunk(id=i, text=t) for i, t in TEXTS.items()])
    index.save(tmp_path / "index")
    retriever = get_retriever(
        {"index": str(tmp_path / "index"), "k": 2, "query": "multi-query", "reranker": "none"}
    )
    assert isinstance(retriever, RewritingRetriever) and retriever.mode == "multi-query"
    assert len(retriever.invoke(QUERY)) == 2


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.tracing.reset()
    yield
    mlflow.set_tracking_uri(original)
    monkeypatch.undo()
    mlflow.tracing.reset()


@pytest.mark.slow  # a fresh SQLite tracking store
@pytest.mark.usefixtures("tracking")
def test_rewrite_span_and_attributes(bm25: LocalRetriever) -> None:
    with mlflow.start_span("agent", span_type=SpanType.AGENT):
        traced_retrieve(RewritingRetriever(base=bm25, mode="multi-query", k=3), QUERY)
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id(), flush=True)  # type: ignore[arg-type]
    assert trace is not None
    (outer,) = trace.search_spans(span_type=SpanType.RETRIEVER)  # one RETRIEVER span for the scorers
    (rewrite,) = trace.search_spans(span_type=SpanType.PARSER)
    assert rewrite.parent_id == outer.span_id
    assert outer.get_attribute("ragworks.query_rewrite") == "multi-query"
    assert outer.get_attribute("ragworks.query_variants") == 1
    assert rewrite.outputs["queries"][0].startswith(QUERY)


def _multi_query_retriever(tmp_path: Path) -> dict[str, Any]:
    """A saved BM25 index of TEXTS and the multi-query retriever config over it."""
    index = LocalIndex(embeddings="none")
    index.upsert([Chunk(id=i, text=t) for i, t in TEXTS.items()])
    index.save(tmp_path / "index")
    return {"index": str(tmp_path / "index"), "k": 2, "mode": "bm25", "query": "multi-query"}


def test_the_agents_own_model_writes_the_query_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.agents import builder

    model = ScriptedChatModel(responses=["aspirin antipyretic effect", "Aspirin reduces fever [1]."])
    monkeypatch.setattr(builder, "get_chat_model", lambda name, **kw: model)
    retriever = _multi_query_retriever(tmp_path)
    graph = builder.build_graph({"llm": "openai:gpt-4o-mini", "retriever": retriever})
    graph.invoke({"messages": [("user", QUERY)]})
    rewrite, answer = (str(call[-1].content) for call in model.history)
    assert "search queries" in rewrite and QUERY in rewrite  # the multi-query prompt reached the model
    assert "<source" in answer


def test_the_offline_agent_keeps_the_deterministic_rewriting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.agents import builder

    writers: list[object] = []
    real = builder.get_retriever
    monkeypatch.setattr(builder, "get_retriever", lambda cfg, *, model: writers.append(model) or real(cfg))
    retriever = _multi_query_retriever(tmp_path)
    graph = builder.build_graph({"llm": "offline:lexical", "retriever": retriever})
    assert writers == [None]  # the offline model cannot write queries
    reply = graph.invoke({"messages": [("user", "What does aspirin reduce in adults?")]})["messages"][-1]
    assert reply.content == "Aspirin reduces fever in adults [1]."
