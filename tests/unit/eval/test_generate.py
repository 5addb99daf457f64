"""`ragworks eval generate`: offline suites over the shipped docs that retrieve their own documents."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragworks.cli import app
from ragworks.errors import EvalError
from ragworks.eval import generate as G
from ragworks.eval.generate import doc_ids, generate_suite
from ragworks.eval.generate_checks import check_suite
from ragworks.eval.suite import EvalSuite
from ragworks.retrieval.ingest import ingest
from ragworks.retrieval.local import Chunk, LocalIndex

DOCS = Path(__file__).resolve().parents[3] / "src" / "ragworks" / "data" / "docs"
SOURCES = {p.name for p in DOCS.glob("*.md")}
# Measured by benchmarks/generated_suites.py: 1.000 on the shipped docs (hashing embeddings, hybrid, k=5).
RECALL_FLOOR = 0.9
runner = CliRunner()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gen") / "index"
    ingest([DOCS], folder, embeddings="hashing", progress=False)
    return folder


@pytest.fixture(scope="module")
def index(index_dir: Path) -> LocalIndex:
    return LocalIndex.load(index_dir)


def test_same_seed_same_suite_and_another_seed_another(index: LocalIndex) -> None:
    first = generate_suite(index.chunks(), 12, seed=7).suite.to_records()
    again = generate_suite(index.chunks(), 12, seed=7).suite.to_records()
    other = generate_suite(index.chunks(), 12, seed=8).suite.to_records()
    assert first == again
    assert [r["inputs"] for r in first] != [r["inputs"] for r in other]


def test_questions_are_spread_over_every_source_round_robin(index: LocalIndex) -> None:
    result = generate_suite(index.chunks(), 10, seed=0)
    expected = [r.expectations.expected_doc_ids for r in result.suite.rows if r.expectations]
    assert {d[0] for d in expected[: len(SOURCES)]} == SOURCES  # one per source in the first round
    assert result.sources_covered == result.sources_total == len(SOURCES)


def test_questions_retrieve_their_documents_without_copies_or_duplicates(index: LocalIndex) -> None:
    result = generate_suite(index.chunks(), 20, seed=0)
    check = check_suite(result.suite, index, k=5)
    assert check.n == 20
    assert check.verbatim == 0 and check.duplicates == 0
    assert check.recall_at_k >= RECALL_FLOOR
    for row in result.suite.rows:
        assert row.expectations and row.expectations.expected_facts and row.expectations.expected_response


def test_a_question_copying_its_chunk_is_rejected(index: LocalIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "question_for", lambda sentence, weights, rng: (sentence, ["x"]))
    with pytest.raises(EvalError, match="No question could be generated"):
        generate_suite(index.chunks(), 5, seed=0)
    verbatim = check_suite(
        EvalSuite.model_validate({"rows": [{"inputs": index.chunks()[0].text[:200]}]}), index
    )
    assert verbatim.verbatim == 1


def test_near_duplicate_questions_are_rejected() -> None:
    text = "Hybrid retrieval fuses lexical BM25 rankings with dense embedding rankings for recall."
    chunks = [Chunk(id=f"c{i}", text=text, metadata={"source": f"docs/{i}.md"}) for i in range(3)]
    result = generate_suite(chunks, 3, seed=0)
    assert len(result.suite.rows) == 1
    assert result.duplicates_rejected == 2
    assert "(the corpus has no more)" in result.summary()


def test_doc_ids_use_file_names_unless_two_sources_share_one() -> None:
    chunks = [
        Chunk(id="a", text="t", metadata={"source": "x/README.md"}),
        Chunk(id="b", text="t", metadata={"source": "y/README.md"}),
        Chunk(id="c", text="t", metadata={"source": "y/guide.md"}),
        Chunk(id="d", text="t"),
    ]
    assert doc_ids(chunks) == {"a": "x/README.md", "b": "y/README.md", "c": "guide.md", "d": "d"}


def test_question_terms_come_from_the_sentence() -> None:
    made = G.question_for(
        "The writer lock stops two ingest runs from changing one index folder at once.", {}, random.Random(0)
    )
    assert made is not None
    question, facts = made
    assert question.endswith(("?", ".")) and facts
    assert G.question_terms(question) <= G.S.stems(
        "writer lock stops two ingest runs changing index folder once"
    )


def test_cli_writes_a_suite_that_loads(index_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "generated.yaml"
    result = runner.invoke(app, ["eval", "generate", "--index", str(index_dir), "-n", "6", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "6 questions over 5/5 sources" in result.output
    suite = EvalSuite.load(out)
    assert suite.name == "generated" and len(suite.rows) == 6


def test_cli_reads_the_index_an_agent_config_names(index_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(f"retriever: {{type: local, index: {index_dir}}}\n", encoding="utf-8")
    out = tmp_path / "s.yaml"
    result = runner.invoke(app, ["eval", "generate", "--config", str(config), "-n", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(EvalSuite.load(out).rows) == 3


def test_cli_empty_index_is_one_line_exit_1_and_no_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    LocalIndex(embeddings="hashing").save(empty)
    out = tmp_path / "s.yaml"
    result = runner.invoke(app, ["eval", "generate", "--index", str(empty), "-n", "5", "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "holds no chunks" in result.output
    assert not out.exists()


def test_cli_without_prose_is_an_error_not_an_empty_suite(tmp_path: Path) -> None:
    index = LocalIndex(embeddings="hashing")
    index.upsert([Chunk(id="c", text="# Title\n\n```\ncode only\n```", metadata={"source": "a.md"})])
    index.save(tmp_path / "idx")
    out = tmp_path / "s.yaml"
    result = runner.invoke(app, ["eval", "generate", "--index", str(tmp_path / "idx"), "-o", str(out)])
    assert result.exit_code == 1 and "No question could be generated" in result.output
    assert not out.exists()
