"""The Spark ingest's parts that need no JVM: the executors' partition body and TABLE parsing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from ragworks.errors import ConfigError
from ragworks.retrieval.ingest import IngestReport, make_splitter, plan_ingest
from ragworks.scale._spark_worker import WorkerParams, chunk_partition
from ragworks.scale.delta_table import EmbedderSpec, arrow_schema, parse_table, spec_from_metadata

PARAMS = WorkerParams(chunk_size=200, chunk_overlap=20, embeddings="hashing", max_file_mb=1.0)


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> None:
        self.value += n


def _doc(
    source: str, *, path: str | None = None, content: bytes | None = None, text: str | None = None, kind: str
) -> dict[str, object]:
    return {"source": source, "path": path, "content": content, "text": text, "kind": kind}


def _run(docs: list[dict[str, object]], known: dict[str, str]) -> tuple[pd.DataFrame, int]:
    counter = _Counter()
    frame = pd.DataFrame(docs, columns=["source", "path", "content", "text", "kind"])
    out = chunk_partition(iter([frame]), params=PARAMS, known=SimpleNamespace(value=known), embedded=counter)  # type: ignore[arg-type]
    return pd.concat(list(out)), counter.value


def test_partition_chunks_as_the_local_ingest_and_skips_what_is_known(tmp_path: Path) -> None:
    long = tmp_path / "long.md"
    paragraphs = (f"Paragraph {i} says something about MLflow." for i in range(20))
    long.write_text("# Title\n\n" + "\n\n".join(paragraphs))
    same = tmp_path / "same.txt"
    same.write_text("Unchanged text.")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01")
    files = [long, same, tmp_path / "bin.txt"]
    docs = [_doc(str(f), path=str(f), kind=f.suffix) for f in files]
    known = {str(same): hashlib.sha256(same.read_bytes()).hexdigest()}
    out, embedded = _run(docs, known)
    chunks = out[out.status == "chunk"]
    expected, _ = plan_ingest(
        [long], {}, splitter=make_splitter(200, 20), max_file_mb=1.0, show=False, report=IngestReport()
    )
    assert list(chunks.id) == [c.id for c in expected] and len(expected) > 3
    assert list(chunks.text) == [c.text for c in expected]
    assert embedded == len(expected)  # the unchanged and the binary file were not embedded
    assert all(len(v) == 384 for v in chunks.embedding)
    status = dict(zip(out[out.status != "chunk"].source, out[out.status != "chunk"].status, strict=True))
    assert status == {str(same): "unchanged", str(tmp_path / "bin.txt"): "skipped"}


def test_partition_reads_table_rows_and_spark_read_files() -> None:
    docs = [
        _doc("row-1", text="A row of text.", kind="row"),
        _doc("row-2", text="  ", kind="row"),
        _doc("file:/d/a.md", path="file:/d/a.md", content=b"# A\nfile", kind=".md"),
        _doc("file:/d/a.csv", path="file:/d/a.csv", content=b"x,y", kind=".csv"),
    ]
    out, embedded = _run(docs, {})
    assert embedded == 2
    rows = out.set_index("source")
    assert rows.loc["row-1", "type"] == "row" and rows.loc["file:/d/a.md", "type"] == "md"
    assert rows.loc["row-2", "reason"] == "empty: no text to index"
    assert "unsupported file type" in rows.loc["file:/d/a.csv", "reason"]


@pytest.mark.parametrize(
    ("raw", "path", "name"),
    [
        ("./chunks", "chunks", None),
        ("/data/chunks", "/data/chunks", None),
        ("s3://bucket/chunks", "s3://bucket/chunks", None),
        ("main.rag.chunks", None, "main.rag.chunks"),
        ("chunks", None, "chunks"),
    ],
)
def test_table_is_a_path_or_a_name(raw: str, path: str | None, name: str | None) -> None:
    ref = parse_table(raw)
    assert (ref.path, ref.name) == (path, name)


def test_a_table_that_is_neither_is_refused() -> None:
    with pytest.raises(ConfigError, match="neither a folder"):
        parse_table("no such; table")


def test_the_embedder_is_recorded_on_the_embedding_column() -> None:
    field = arrow_schema(EmbedderSpec(name="minilm", dim=384)).field("embedding")
    meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    assert spec_from_metadata(meta) == EmbedderSpec(name="minilm", dim=384)
    assert spec_from_metadata({}) is None


def test_a_failed_spark_job_is_one_line_naming_the_executors_error() -> None:
    from ragworks.errors import RagworksError
    from ragworks.scale.spark_ingest import _job_errors

    trace = (
        "An error occurred while calling o123.parquet.\n: org.apache.spark.SparkException: Job aborted.\n"
        'Traceback (most recent call last):\n  File "worker.py", line 1\n'
        "ragworks.errors.ConfigError: The 'minilm' embedder needs the dense extra\n\tat org.apache.spark.X"
    )
    with pytest.raises(RagworksError) as caught, _job_errors():
        raise RuntimeError(trace)
    assert (
        str(caught.value)
        == "The Spark job failed: ragworks.errors.ConfigError: The 'minilm' embedder needs the dense extra"
    )
