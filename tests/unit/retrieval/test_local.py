from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document

from ragworks.embeddings import HashingEmbedder
from ragworks.errors import ConfigError, IndexFormatError
from ragworks.retrieval.local import MANIFEST, Chunk, LocalIndex

TEXTS = [
    "MLflow tracks experiments, runs and models.",
    "LangGraph compiles agent graphs out of nodes and edges.",
    "BM25 ranks documents by rare shared words.",
    "Experiments in MLflow group many runs together.",
]
CHUNKS = [
    Chunk(id=cid, text=text, metadata={"source": f"{cid}.md", "n": n})
    for n, (cid, text) in enumerate(zip("abcd", TEXTS, strict=True), 1)
]


class CountingEmbedder(HashingEmbedder):
    """Hashing embedder that counts how many texts it embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0

    def encode(self, texts, *, show_progress=False):  # type: ignore[no-untyped-def]
        self.embedded += len(texts)
        return super().encode(texts)


@pytest.fixture
def index() -> LocalIndex:
    idx = LocalIndex(embeddings="hashing")
    idx.upsert(CHUNKS)
    return idx


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "dense"])
def test_search_returns_documents_best_first(index: LocalIndex, mode: str) -> None:
    docs = index.search("graphs of nodes and edges", k=2, mode=mode)  # type: ignore[arg-type]
    assert isinstance(docs[0], Document)
    assert docs[0].id == "b"
    assert docs[0].metadata["source"] == "b.md"
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_filters_equality_in_and_numeric(index: LocalIndex) -> None:
    assert {d.id for d in index.search("MLflow experiments", k=4, filters={"n >=": 3})} <= {"c", "d"}
    assert [d.id for d in index.search("MLflow", k=4, filters={"source": ["a.md"]})] == ["a"]
    assert index.search("MLflow", k=4, filters={"source": "zzz.md"}) == []


def test_add_refuses_existing_ids_upsert_replaces(index: LocalIndex) -> None:
    with pytest.raises(ConfigError, match="upsert"):
        index.add([CHUNKS[0]])
    index.upsert([Chunk(id="a", text="Sourdough needs a starter.", metadata={"source": "a.md"})])
    assert len(index) == 4
    assert index.search("sourdough starter", k=1)[0].id == "a"
    assert "MLflow tracks" not in index.get(["a"])[0].text


def test_delete_removes_from_every_search_mode(index: LocalIndex) -> None:
    assert index.delete(["b", "missing"]) == 1
    for mode in ("hybrid", "bm25", "dense"):
        assert "b" not in {d.id for d in index.search("graphs nodes edges", k=4, mode=mode)}  # type: ignore[arg-type]
    assert index.ids() == ["a", "c", "d"]


def test_round_trip_gives_identical_results(index: LocalIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    loaded = LocalIndex.load(tmp_path / "idx")
    for query in ("MLflow experiments", "agent graphs", "rare words"):
        for mode in ("hybrid", "bm25", "dense"):
            before = [(d.id, round(d.metadata["score"], 6)) for d in index.search(query, k=4, mode=mode)]  # type: ignore[arg-type]
            after = [(d.id, round(d.metadata["score"], 6)) for d in loaded.search(query, k=4, mode=mode)]  # type: ignore[arg-type]
            assert before == after
    assert loaded.chunks() == index.chunks()
    assert not any(p.suffix == ".pkl" for p in (tmp_path / "idx").rglob("*"))


def test_loaded_index_can_be_changed_and_saved_again(index: LocalIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    loaded = LocalIndex.load(tmp_path / "idx")
    loaded.upsert([Chunk(id="e", text="Violins have four strings.", metadata={"source": "e.md"})])
    loaded.save(tmp_path / "idx")
    assert LocalIndex.load(tmp_path / "idx").search("violin strings", k=1)[0].id == "e"


def test_embeddings_are_reused_by_content_hash() -> None:
    embedder = CountingEmbedder()
    idx = LocalIndex(embeddings=embedder)
    idx.upsert(CHUNKS)
    assert embedder.embedded == 4
    idx.upsert([Chunk(id="a2", text=CHUNKS[0].text, metadata={"source": "copy.md"})])
    assert embedder.embedded == 4


@pytest.mark.parametrize(
    ("manifest", "match"),
    [
        (None, "not a ragworks index"),
        ('{"format": "chroma", "version": 1}', "not a ragworks one"),
        ('{"format": "ragworks-local-index", "version": 99}', "version 99"),
        ("{broken", "damaged"),
    ],
)
def test_foreign_or_old_folders_are_clear_errors(tmp_path: Path, manifest: str | None, match: str) -> None:
    (tmp_path / "x").mkdir()
    if manifest is not None:
        (tmp_path / "x" / MANIFEST).write_text(manifest)
    with pytest.raises(IndexFormatError, match=match):
        LocalIndex.load(tmp_path / "x")


def test_save_refuses_to_overwrite_a_foreign_folder(index: LocalIndex, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(IndexFormatError, match="not a ragworks index"):
        index.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_bm25_only_index(tmp_path: Path) -> None:
    idx = LocalIndex(embeddings="none")
    idx.upsert(CHUNKS)
    assert idx.embedder_name == "none"
    assert idx.search("agent graphs", k=1)[0].id == "b"
    with pytest.raises(ConfigError, match="bm25"):
        idx.search("agent graphs", mode="dense")
    idx.save(tmp_path / "idx")
    assert not (tmp_path / "idx" / "vectors.npy").exists()
    assert LocalIndex.load(tmp_path / "idx").search("agent graphs", k=1)[0].id == "b"


def test_edge_cases(index: LocalIndex) -> None:
    assert index.search("   ") == []
    assert index.search("the and of", mode="bm25") == []  # only stop words: no BM25 terms
    assert len(index.search("MLflow", k=50)) <= 4
    assert LocalIndex(embeddings="none").search("anything") == []
    with pytest.raises(ConfigError, match="k must be"):
        index.search("x", k=0)
    with pytest.raises(ConfigError, match="mode"):
        index.search("x", mode="fuzzy")  # type: ignore[arg-type]


def test_vectors_are_unit_length(index: LocalIndex) -> None:
    vectors = HashingEmbedder().encode([c.text for c in CHUNKS])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_minilm_finds_paraphrases() -> None:
    pytest.importorskip("sentence_transformers")
    idx = LocalIndex(embeddings="minilm")
    idx.upsert(CHUNKS)
    assert idx.embedder_name == "minilm"
    # No shared content words with chunk "c": only the dense model can link them.
    assert idx.search("ranking search results by uncommon terms", k=1, mode="dense")[0].id == "c"


def test_fusion_settings_survive_a_round_trip(tmp_path: Path) -> None:
    from ragworks.retrieval.fusion import FusionParams

    fusion = FusionParams(method="convex", weight_dense=0.3, depth=50, normalize="zscore")
    idx = LocalIndex(embeddings="hashing", fusion=fusion)
    idx.upsert(CHUNKS)
    idx.save(tmp_path / "idx")
    assert LocalIndex.load(tmp_path / "idx").fusion == fusion


def test_search_with_a_query_vector_made_elsewhere(index: LocalIndex) -> None:
    question = "graphs of nodes and edges"
    vector = HashingEmbedder().encode([question])[0]
    for mode in ("dense", "hybrid"):
        by_text = index.search(question, k=3, mode=mode)  # type: ignore[arg-type]
        by_vector = index.search(question, k=3, mode=mode, vector=list(3 * vector))  # any length: normalised
        assert [d.id for d in by_vector] == [d.id for d in by_text]
    assert index.search("", k=1, mode="dense", vector=vector)[0].id == "b"  # the vector alone
    with pytest.raises(ConfigError, match="3 dimensions"):
        index.search("x", mode="dense", vector=[0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="no embeddings"):
        bm25_only = LocalIndex(embeddings="none")
        bm25_only.upsert(CHUNKS)
        bm25_only.search("x", vector=vector)


def test_a_filter_on_a_field_no_chunk_has_is_an_error_listing_the_fields(index: LocalIndex) -> None:
    with pytest.raises(ConfigError, match=r"'sorce'; fields in this index: n, source"):
        index.search("MLflow", k=2, filters={"sorce": "a.md"})
    with pytest.raises(ConfigError, match="'year'"):
        index.search("MLflow", k=2, filters={"year >=": 2020})
    index.upsert([Chunk(id="e", text="MLflow again", metadata={"source": "e.md", "year": 2024})])
    assert [d.id for d in index.search("MLflow", k=2, filters={"year >=": 2020})] == ["e"]
