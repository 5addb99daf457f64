"""`ingest --spark` into a Delta table and `index --from-table`, against a local ingest of the same files.

Spark runs in local mode (the session-wide `spark` fixture); Delta is written through delta-rs, as
it is wherever Spark lacks Delta Lake's jars. Hashing embeddings keep the runs fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ragworks
from ragworks.cli import app
from ragworks.retrieval import ingest
from ragworks.retrieval.ingest import chunk_document, make_splitter
from ragworks.retrieval.local import LocalIndex

pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")

SHIPPED_DOCS = Path(ragworks.__file__).parent / "data" / "docs"
SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact" / "corpus.jsonl"
QUERIES = ["how do I log an agent", "hybrid search with BM25", "serving endpoint", "tracing spans", "eval"]


def _rows(table: Path) -> dict[str, dict[str, Any]]:
    """id -> row of the chunk table's current version."""
    data = deltalake.DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    return {r["id"]: r for r in data}


def _spark_ingest(*args: str) -> Any:
    result = CliRunner().invoke(app, ["ingest", *args, "--spark", "--embeddings", "hashing"])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def docs_table(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(docs folder, its chunk table written by Spark, its local index written by `ingest`)."""
    root = tmp_path_factory.mktemp("spark-ingest")
    docs = root / "docs"
    shutil.copytree(SHIPPED_DOCS, docs)
    _spark_ingest(str(docs), "--table", str(root / "chunks"))
    ingest([str(docs)], root / "index", embeddings="hashing")
    return docs, root / "chunks", root / "index"


def test_shipped_docs_table_has_the_local_ingests_chunks(docs_table: tuple[Path, Path, Path]) -> None:
    _, table, index = docs_table
    rows = _rows(table)
    local = {c.id: c for c in LocalIndex.load(index).chunks()}
    assert len(local) > 5
    assert set(rows) == set(local)
    for cid, chunk in local.items():
        row = rows[cid]
        assert row["text"] == chunk.text
        meta = {k: row[k] for k in ("source", "chunk_index", "file_hash", "type")}
        assert meta == chunk.metadata
        assert len(row["embedding"]) == 384


def test_index_from_table_answers_as_the_local_ingest(
    docs_table: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, table, index = docs_table
    result = CliRunner().invoke(app, ["index", "--from-table", str(table), "--index", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    assert "stored vectors reused" in result.output
    built, local = LocalIndex.load(tmp_path / "idx"), LocalIndex.load(index)
    assert built.embedder_name == "hashing"
    for query in QUERIES:
        for mode in ("hybrid", "bm25", "dense"):
            ours = [(d.id, round(d.metadata["score"], 5)) for d in built.search(query, k=5, mode=mode)]
            theirs = [(d.id, round(d.metadata["score"], 5)) for d in local.search(query, k=5, mode=mode)]
            assert ours == theirs, (query, mode)


def test_index_from_table_refuses_another_embedder(
    docs_table: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, table, _ = docs_table
    asked = CliRunner().invoke(
        app, ["index", "--from-table", str(table), "--index", str(tmp_path / "a"), "--embeddings", "minilm"]
    )
    assert asked.exit_code == 1
    assert "holds hashing embeddings (384 dims), not minilm" in asked.output
    ingest([str(SHIPPED_DOCS)], tmp_path / "b", embeddings="none")
    existing = CliRunner().invoke(app, ["index", "--from-table", str(table), "--index", str(tmp_path / "b")])
    assert existing.exit_code == 1
    assert "uses none embeddings" in existing.output
    assert LocalIndex.load(tmp_path / "b").embedder_name == "none"  # left as it was


def test_one_changed_file_rewrites_only_its_chunks(spark: Any, tmp_path: Path) -> None:
    docs, table = tmp_path / "docs", tmp_path / "chunks"
    shutil.copytree(SHIPPED_DOCS, docs)
    _spark_ingest(str(docs), "--table", str(table))
    before = _rows(table)
    changed = docs / "serving.md"
    changed.write_text(changed.read_text(encoding="utf-8") + "\nA new closing paragraph.\n", encoding="utf-8")
    source = str(docs / "serving.md")
    result = _spark_ingest(str(docs), "--table", str(table))
    assert "0 added, 1 replaced, 4 unchanged" in result.output
    after = _rows(table)
    others = {i: r for i, r in before.items() if r["source"] != source}
    assert {i: r for i, r in after.items() if r["source"] != source} == others
    fresh = {i for i, r in after.items() if r["source"] == source}
    assert f"{len(fresh)} embeddings computed" in result.output  # only the changed file was embedded
    gone = {i for i, r in before.items() if r["source"] == source} - fresh
    assert gone and not gone & set(after)
    history = deltalake.DeltaTable(str(table)).history()
    assert [h["operation"] for h in history] == ["MERGE", "WRITE"]
    metrics = history[0]["operationMetrics"]
    assert metrics["num_target_rows_deleted"] == len(gone)
    assert metrics["num_target_rows_inserted"] + metrics["num_target_rows_updated"] == len(fresh)
    ingest([str(docs)], tmp_path / "index", embeddings="hashing")
    assert set(after) == set(LocalIndex.load(tmp_path / "index").ids())
    again = _spark_ingest(str(docs), "--table", str(table))
    assert "5 unchanged" in again.output and "0 embeddings computed" in again.output
    assert len(deltalake.DeltaTable(str(table)).history()) == 2  # nothing changed: no commit


def test_table_and_uri_sources(spark: Any, tmp_path: Path) -> None:
    source_table = tmp_path / "articles"
    texts = {
        "a-1": "Delta tables keep their history.\n\nEach commit is a version.",
        "a-2": "Spark reads them.",
    }
    deltalake.write_deltalake(str(source_table), _arrow({"doc": list(texts), "body": list(texts.values())}))
    table = tmp_path / "chunks"
    uri = (SHIPPED_DOCS / "agents.md").as_uri()
    _spark_ingest(
        f"table:{source_table}", uri, "--table", str(table), "--text-column", "body", "--id-column", "doc"
    )
    rows = _rows(table)
    splitter = make_splitter(1000, 150)
    expected = [
        chunk
        for doc, text in texts.items()
        for chunk in chunk_document(text, source=doc, file_hash=_sha256(text), kind="row", splitter=splitter)
    ]
    assert {c.id for c in expected} <= set(rows)
    assert all(rows[c.id]["type"] == "row" for c in expected)
    from_uri = [r for r in rows.values() if r["source"].endswith("agents.md")]
    assert from_uri and from_uri[0]["source"].startswith("file:") and from_uri[0]["type"] == "md"
    wrong = CliRunner().invoke(
        app, ["ingest", f"table:{source_table}", "--spark", "--table", str(table), "--text-column", "content"]
    )
    assert wrong.exit_code == 1
    assert "has no column 'content'" in wrong.output and "--text-column" in wrong.output


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _arrow(columns: dict[str, list[str]]) -> Any:
    import pyarrow as pa

    return pa.table(columns)


def test_bad_input_is_one_line(spark: Any, tmp_path: Path) -> None:
    missing = CliRunner().invoke(
        app, ["index", "--from-table", str(tmp_path / "nope"), "--index", str(tmp_path)]
    )
    assert missing.exit_code == 1
    assert "No Delta table at" in missing.output and len(missing.output.strip().splitlines()) == 1
    no_table = CliRunner().invoke(app, ["ingest", str(SHIPPED_DOCS), "--spark"])
    assert no_table.exit_code == 1 and "add --table" in no_table.output
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("not a table")
    foreign = CliRunner().invoke(
        app, ["ingest", str(SHIPPED_DOCS), "--spark", "--table", str(tmp_path / "plain")]
    )
    assert foreign.exit_code == 1 and "is not a Delta table" in foreign.output


def test_without_pyspark_the_message_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark now raises ImportError
    result = CliRunner().invoke(app, ["ingest", str(SHIPPED_DOCS), "--spark", "--table", str(tmp_path / "t")])
    assert result.exit_code == 1
    assert "pip install 'ragworks[spark]'" in result.output


@pytest.mark.slow
def test_without_java_the_message_names_the_runtime(tmp_path: Path) -> None:
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "PYSPARK_SUBMIT_ARGS": "pyspark-shell"}
    command = [sys.executable, "-c", "from ragworks.cli import main; main()", "ingest", str(SHIPPED_DOCS)]
    command += ["--spark"]
    command += ["--master", "local[1]", "--table", str(tmp_path / "t"), "--embeddings", "hashing"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Java runtime" in errors[0]


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_file(), reason="needs ../shared/data/scifact/corpus.jsonl")
def test_a_thousand_scifact_documents_give_the_local_chunks(spark: Any, tmp_path: Path) -> None:
    docs = tmp_path / "scifact"
    docs.mkdir()
    with SCIFACT.open(encoding="utf-8") as fh:
        for line, _ in zip(fh, range(1000), strict=False):
            doc = json.loads(line)
            (docs / f"{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}", encoding="utf-8")
    _spark_ingest(str(docs), "--table", str(tmp_path / "chunks"))
    ingest([str(docs)], tmp_path / "index", embeddings="hashing")
    rows = _rows(tmp_path / "chunks")
    local = {c.id: c.text for c in LocalIndex.load(tmp_path / "index").chunks()}
    assert len({r["source"] for r in rows.values()}) == 1000
    assert {i: r["text"] for i, r in rows.items()} == local
