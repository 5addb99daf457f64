"""Ingestion: load files, chunk them, embed and index them, incrementally.

Chunk ids are content hashes, so re-ingesting unchanged files does nothing and a changed file
replaces its old chunks. Bad files are skipped with a reason and never stop the run; the index
folder is written atomically, or not at all when nothing changed.

Example:
    >>> report = ingest(["docs/"], "./index", embeddings="hashing")   # doctest: +SKIP
    >>> print(report.summary())                                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from langchain_text_splitters import RecursiveCharacterTextSplitter
from tqdm import tqdm

from ragworks.errors import ConfigError
from ragworks.retrieval.loaders import SUPPORTED_SUFFIXES, SkipFile, read_document
from ragworks.retrieval.local import MANIFEST, Chunk, LocalIndex

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class IngestReport:
    """What an ingest run did, file by file."""

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) pairs."""
    chunks_written: int = 0
    chunks_total: int = 0
    embedder: str = "none"
    index_path: str | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """True when the run changed the index."""
        return bool(self.added or self.replaced)

    def summary(self) -> str:
        """A short human-readable summary."""
        lines = [
            f"{len(self.added)} added, {len(self.replaced)} replaced, "
            f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped; "
            f"{self.chunks_written} chunks written, {self.chunks_total} in the index "
            f"(embeddings: {self.embedder}, {self.seconds:.1f}s)"
        ]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def iter_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str]]:
    """Yield (file, source name) for each file argument and each supported file under folders."""
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise ConfigError(f"No such file or folder: {root}")
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    path = Path(dirpath) / name
                    yield path, Path(os.path.normpath(path)).as_posix()
        else:
            yield root, Path(os.path.normpath(root)).as_posix()


def make_splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    """The text splitter for chunking; overlap must be smaller than the chunk size."""
    if chunk_overlap >= chunk_size:
        raise ConfigError(f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size}).")
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def chunk_id(source: str, index: int, text: str) -> str:
    """Stable id of a chunk: a hash of where it came from and what it says."""
    return hashlib.sha256(f"{source}\x00{index}\x00{text}".encode()).hexdigest()[:32]


def ingest(
    paths: Iterable[str | Path],
    index: LocalIndex | str | Path,
    *,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    embeddings: str = "auto",
    max_file_mb: float = 50.0,
    progress: bool | None = None,
) -> IngestReport:
    """Load, chunk, embed and index files and folders; returns what happened to each file.

    Args:
        paths: files and folders (.txt, .md, .html, .pdf).
        index: a LocalIndex to update in memory, or a folder to load (or create) and save.
        chunk_size: maximum characters per chunk.
        chunk_overlap: characters shared by neighbouring chunks.
        embeddings: embedder for a new index (`auto`, `minilm`, `hashing`, `none`).
        max_file_mb: larger files are skipped.
        progress: show a progress bar; default: when stderr is a terminal.
    """
    started = time.perf_counter()
    splitter = make_splitter(chunk_size, chunk_overlap)
    folder = None if isinstance(index, LocalIndex) else Path(index)
    if folder is not None:
        index = LocalIndex.load(folder) if (folder / MANIFEST).exists() else LocalIndex(embeddings=embeddings)
    assert isinstance(index, LocalIndex)
    show = sys.stderr.isatty() if progress is None else progress
    report = IngestReport(embedder=index.embedder_name, index_path=str(folder) if folder else None)
    fresh, stale = plan_ingest(
        paths, _known_sources(index), splitter=splitter, max_file_mb=max_file_mb, show=show, report=report
    )
    if report.changed:
        index.delete(stale)
        index.upsert(fresh, show_progress=show)
        if folder is not None:
            index.save(folder)
    report.chunks_written = len(fresh)
    report.chunks_total = len(index)
    report.seconds = time.perf_counter() - started
    return report


def plan_ingest(
    paths: Iterable[str | Path],
    known: Mapping[str, tuple[str, list[str]]],
    *,
    splitter: RecursiveCharacterTextSplitter,
    max_file_mb: float,
    show: bool,
    report: IngestReport,
) -> tuple[list[Chunk], list[str]]:
    """Read and chunk what changed: (the new chunks, the ids of the chunks they replace).

    `known` maps each source already indexed to (its file hash, its chunk ids). A file whose hash
    matches is not read again; with no hash on record (""), a file whose chunk ids all match is
    unchanged. Fills `report`'s added / replaced / unchanged / skipped lists.
    """
    fresh: list[Chunk] = []
    stale: list[str] = []
    files = list(iter_files(paths))
    for path, source in tqdm(files, desc="Reading", unit="file", disable=not show):
        try:
            data = _read_bytes(path, max_file_mb)
            digest = hashlib.sha256(data).hexdigest()
            if known.get(source, ("", []))[0] == digest:
                report.unchanged.append(source)
                continue
            text = read_document(path, data=data)
        except SkipFile as exc:
            logger.warning("Skipping %s: %s", source, exc)
            report.skipped.append((source, str(exc)))
            continue
        pieces = [p for p in splitter.split_text(text) if p.strip()]
        meta = {"source": source, "file_hash": digest, "type": path.suffix.lower().lstrip(".")}
        chunks = [
            Chunk(id=chunk_id(source, i, p), text=p, metadata={**meta, "chunk_index": i})
            for i, p in enumerate(pieces)
        ]
        if source in known and not known[source][0] and {c.id for c in chunks} == set(known[source][1]):
            report.unchanged.append(source)  # no hash on record, same chunks (ids are content hashes)
            continue
        fresh += chunks
        if source in known:
            stale += known[source][1]
            report.replaced.append(source)
        else:
            report.added.append(source)
    return fresh, stale


def _read_bytes(path: Path, max_file_mb: float) -> bytes:
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise SkipFile(f"unsupported file type {path.suffix or '(none)'!r}")
    try:
        size = path.stat().st_size
        if size > max_file_mb * 1024 * 1024:
            raise SkipFile(f"too large: {size / 1e6:.1f} MB > {max_file_mb} MB limit")
        return path.read_bytes()
    except FileNotFoundError:
        raise SkipFile("not found") from None
    except OSError as exc:
        raise SkipFile(f"unreadable: {exc.strerror or exc}") from None


def _known_sources(index: LocalIndex) -> dict[str, tuple[str, list[str]]]:
    """source -> (file hash, chunk ids) for what the index already holds."""
    out: dict[str, tuple[str, list[str]]] = {}
    for chunk in index.chunks():
        source = str(chunk.metadata.get("source", ""))
        digest, ids = out.get(source, (str(chunk.metadata.get("file_hash", "")), []))
        ids.append(chunk.id)
        out[source] = (digest, ids)
    return out
