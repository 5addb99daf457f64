import hashlib
from pathlib import Path

import numpy as np
import pytest

from ragworks.errors import ConfigError
from ragworks.retrieval import LocalIndex, ingest


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "guide.md").write_text("# Guide\n\nRagworks ingests markdown files into a hybrid index.\n")
    (root / "notes.txt").write_text("Plain text notes about violins and their four strings.\n")
    (root / "sub" / "page.html").write_text(
        "<html><head><title>T</title><style>body{color:red}</style>"
        "<script>var secretTracker = 1;</script></head>"
        "<body><h1>Volcanoes</h1><p>Magma pressure breaks the crust.</p></body></html>"
    )
    (root / "empty.md").write_text("   \n")
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00")
    (root / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".hidden.md").write_text("should not be read")
    return root


def test_ingest_reports_each_file_and_indexes_text(docs: Path, tmp_path: Path) -> None:
    report = ingest([docs], tmp_path / "idx", embeddings="hashing")
    sources = {Path(s).name for s in report.added}
    assert sources == {"guide.md", "notes.txt", "page.html"}
    reasons = {Path(s).name: r for s, r in report.skipped}
    assert reasons["empty.md"].startswith("empty")
    assert reasons["blob.txt"].startswith("binary")
    assert reasons["latin.txt"].startswith("unreadable")
    assert reasons["image.png"].startswith("unsupported")
    assert ".hidden.md" not in reasons
    index = LocalIndex.load(tmp_path / "idx")
    hit = index.search("magma crust", k=1)[0]
    assert hit.metadata["source"].endswith("sub/page.html")
    assert hit.metadata["chunk_index"] == 0
    texts = " ".join(c.text for c in index.chunks())
    assert "secretTracker" not in texts and "color:red" not in texts


def test_reingest_unchanged_is_a_no_op_and_byte_identical(docs: Path, tmp_path: Path) -> None:
    ingest([docs], tmp_path / "idx", embeddings="hashing")
    before = _tree_digest(tmp_path / "idx")
    report = ingest([docs], tmp_path / "idx", embeddings="hashing")
    assert report.added == [] and report.replaced == [] and len(report.unchanged) == 3
    assert _tree_digest(tmp_path / "idx") == before


def test_changed_file_replaces_its_old_chunks(docs: Path, tmp_path: Path) -> None:
    ingest([docs], tmp_path / "idx", embeddings="hashing")
    (docs / "notes.txt").write_text("Completely new notes about sourdough starters.\n")
    report = ingest([docs], tmp_path / "idx", embeddings="hashing")
    assert [Path(s).name for s in report.replaced] == ["notes.txt"]
    index = LocalIndex.load(tmp_path / "idx")
    texts = [c.text for c in index.chunks() if c.metadata["source"].endswith("notes.txt")]
    assert texts == ["Completely new notes about sourdough starters."]


def test_chunking_respects_size_and_overlap(tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text(" ".join(f"word{i}" for i in range(400)))
    ingest([tmp_path / "long.txt"], tmp_path / "idx", embeddings="none", chunk_size=200, chunk_overlap=40)
    chunks = sorted(LocalIndex.load(tmp_path / "idx").chunks(), key=lambda c: c.metadata["chunk_index"])
    assert len(chunks) > 5
    assert all(len(c.text) <= 200 for c in chunks)
    assert chunks[0].text.split()[-1] in chunks[1].text  # the overlap carries words over
    with pytest.raises(ConfigError, match="chunk_overlap"):
        ingest([tmp_path / "long.txt"], tmp_path / "idx2", chunk_size=100, chunk_overlap=100)


def test_too_large_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x " * 600_000)
    (tmp_path / "small.txt").write_text("a small file")
    report = ingest(
        [tmp_path / "big.txt", tmp_path / "small.txt"], tmp_path / "idx", embeddings="none", max_file_mb=1
    )
    assert report.skipped and report.skipped[0][1].startswith("too large")
    with pytest.raises(ConfigError, match="too large"):  # nothing left to index
        ingest([tmp_path / "big.txt"], tmp_path / "idx2", embeddings="none", max_file_mb=1)
    assert not (tmp_path / "idx2").exists()


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or folder"):
        ingest([tmp_path / "nope"], tmp_path / "idx")


def test_failed_write_leaves_the_old_index_intact(
    docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest([docs], tmp_path / "idx", embeddings="hashing")
    before = _tree_digest(tmp_path / "idx")
    (docs / "new.md").write_text("A brand new document about glaciers.")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OSError):
        ingest([docs], tmp_path / "idx", embeddings="hashing")
    assert _tree_digest(tmp_path / "idx") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx")] == [".idx.lock"]
    assert [p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith(".")] == []


def test_pdf_text_is_extracted(tmp_path: Path) -> None:
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    (tmp_path / "blank.pdf").write_bytes(b"")
    with (tmp_path / "blank.pdf").open("wb") as fh:
        writer.write(fh)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "ok.txt").write_text("something to index")
    files = [tmp_path / "blank.pdf", tmp_path / "broken.pdf", tmp_path / "ok.txt"]
    report = ingest(files, tmp_path / "idx", embeddings="none")
    reasons = dict(report.skipped)
    assert reasons[str((tmp_path / "blank.pdf").as_posix())].startswith("empty")
    assert reasons[str((tmp_path / "broken.pdf").as_posix())].startswith("unreadable")


def test_symlinks_out_of_the_folder_are_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "inner").mkdir(parents=True)
    (root / "inner" / "real.md").write_text("Inside the folder: otters hold hands.")
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("root password hunter2")
    (root / "link.txt").symlink_to(secret / "secret.txt")
    (root / "linked-folder").symlink_to(secret, target_is_directory=True)
    (root / "alias.md").symlink_to(root / "inner" / "real.md")  # inside the folder: allowed
    (root / "..sneaky.md").write_text("a name that starts with two dots")
    report = ingest([root], tmp_path / "idx", embeddings="none")
    reasons = {Path(s).name: r for s, r in report.skipped}
    assert reasons["link.txt"].startswith("symlink to a file outside")
    assert reasons["linked-folder"].startswith("symlink to a folder outside")
    assert reasons["..sneaky.md"].startswith("name starts with '..'")
    assert sorted(Path(s).name for s in report.added) == ["alias.md", "real.md"]
    texts = " ".join(c.text for c in LocalIndex.load(tmp_path / "idx").chunks())
    assert "hunter2" not in texts and "otters" in texts


def test_prune_removes_chunks_of_files_that_are_gone(docs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.md").write_text("Another folder's document about lighthouses.")
    ingest([docs], tmp_path / "idx", embeddings="hashing")
    ingest([other], tmp_path / "idx", embeddings="hashing")
    (docs / "notes.txt").unlink()
    kept = ingest([docs], tmp_path / "idx", embeddings="hashing", prune=False)
    assert kept.removed == [] and not kept.changed
    report = ingest([docs], tmp_path / "idx", embeddings="hashing")
    assert [Path(s).name for s in report.removed] == ["notes.txt"]
    assert "1 removed" in report.summary()
    sources = {Path(c.metadata["source"]).name for c in LocalIndex.load(tmp_path / "idx").chunks()}
    assert sources == {"guide.md", "page.html", "keep.md"}  # the other folder is out of scope


def test_prune_removes_a_file_now_skipped(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("Alpha document.")
    (root / "b.md").write_text("Beta document.")
    ingest([root], tmp_path / "idx", embeddings="none")
    (root / "b.md").write_text("  ")
    report = ingest([root], tmp_path / "idx", embeddings="none")
    assert [Path(s).name for s in report.removed] == ["b.md"]
    assert [c.text for c in LocalIndex.load(tmp_path / "idx").chunks()] == ["Alpha document."]


def test_an_empty_folder_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="Nothing to index"):
        ingest([tmp_path / "empty"], tmp_path / "idx", embeddings="none")
    assert not (tmp_path / "idx").exists()


def test_cli_ingest_of_an_empty_folder_exits_1(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragworks.cli import app

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "empty"), "--index", str(tmp_path / "idx")])
    assert result.exit_code == 1
    assert "Nothing to index" in result.output and "unsupported file type" in result.output
    assert not (tmp_path / "idx").exists()


def test_cli_ingest_no_prune_keeps_gone_files(docs: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragworks.cli import app

    args = ["ingest", str(docs), "--index", str(tmp_path / "idx"), "--embeddings", "none"]
    assert CliRunner().invoke(app, args).exit_code == 0
    (docs / "guide.md").unlink()
    result = CliRunner().invoke(app, [*args, "--no-prune"])
    assert result.exit_code == 0 and "0 removed" in result.output
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "1 removed" in result.output
