"""The Databricks reranker: the official client sends it, the emulator reranks, ragworks checks it did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragworks.errors import RetrievalError
from ragworks.retrieval import LocalIndex, get_retriever
from ragworks.testing.contracts import CONTRACT_CORPUS
from ragworks.testing.emulators.vector_search import VectorSearchEmulator

INDEX = "main.docs.rerank"
PLAIN = "main.docs.plain"
TOKEN = "dapi-rerank-test"


@pytest.fixture(scope="module")
def emulator() -> Iterator[VectorSearchEmulator]:
    index = LocalIndex(embeddings="hashing")
    index.upsert(CONTRACT_CORPUS)
    with VectorSearchEmulator({INDEX: index, PLAIN: index}, token=TOKEN) as vs:
        vs.no_reranker.add(PLAIN)
        yield vs


@pytest.fixture
def workspace(
    emulator: VectorSearchEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> VectorSearchEmulator:
    for name in (
        "DATABRICKS_CLIENT_ID",
        "DATABRICKS_CLIENT_SECRET",
        "DATABRICKS_CONFIG_PROFILE",
        "DATABRICKS_AUTH_TYPE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    monkeypatch.setenv("DATABRICKS_HOST", emulator.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    emulator.requests.clear()
    return emulator


def test_databricks_reranker_is_sent_and_its_order_returned(workspace: VectorSearchEmulator) -> None:
    retriever = get_retriever(
        {"type": "databricks-vector-search", "index": INDEX, "k": 2, "mode": "bm25", "reranker": "databricks"}
    )
    docs = retriever.invoke("wild yeast sourdough starter bread")
    assert docs[0].id == "sourdough"
    assert all(d.metadata["reranker"] == "databricks" for d in docs)
    (query,) = [r.body for r in workspace.requests if r.path.endswith("/query")]
    assert query["reranker"]["model"] == "databricks_reranker"
    assert query["reranker"]["parameters"] == {"columns_to_rerank": ["text"]}
    assert query["debug_level"] == 1 and query["num_results"] == 2


def test_an_index_that_did_not_rerank_is_an_error_not_a_claim(workspace: VectorSearchEmulator) -> None:
    retriever = get_retriever(
        {"type": "databricks-vector-search", "index": PLAIN, "k": 2, "reranker": "databricks"}
    )
    with pytest.raises(RetrievalError, match=r"did not rerank.*no reranker_time"):
        retriever.invoke("sourdough starter")


def test_without_the_option_no_reranker_is_sent(workspace: VectorSearchEmulator) -> None:
    get_retriever({"type": "databricks-vector-search", "index": INDEX, "k": 2}).invoke("sourdough")
    (query,) = [r.body for r in workspace.requests if r.path.endswith("/query")]
    assert "reranker" not in query
