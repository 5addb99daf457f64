"""Ingestion: load files, chunk them, embed and index them, incrementally.

Chunk ids are content hashes, so re-ingesting unchanged files does nothing and a changed file
replaces its old chunks. Bad files are skipped with a reason and never stop the run, and so are
symlinks that lead out of the folder given. With `prune` (the default) the chunks of files under
the folders given that this run did not index (deleted, or now skipped) are removed. The index
folder is written atomically under its writer lock, or not at all when nothing changed; input
with nothing to index is an error.

Example:
    >>> report = ingest(["docs/"], "./index", embeddings="hashing")   # doctest: +SKIP
    >>> print(report.summary())                                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from langchain_text_splitters import RecursiveCharacterTextSplitter
from tqdm import tqdm

from ragworks.errors import ConfigError
from ragworks.retrieval import _store
from ragworks.retrieval.loaders import SUPPORTED_SUFFIXES, SkipFile, read_document
from ragworks.retrieval.local import Chunk, LocalIndex

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class IngestReport:
    """What an ingest run did, file by file."""

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Sources whose chunks were pruned: under a folder given, but not indexed by this run."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) pairs."""
    rebuilt: str | None = None
    """Why the index was rebuilt from the files given (it was damaged), or None."""
    chunks_written: int = 0
    chunks_total: int = 0
    embedder: str = "none"
    index_path: str | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """True when the run changed the index."""
        return bool(self.added or self.replaced or self.removed or self.rebuilt)

    def summary(self) -> str:
        """A short human-readable summary."""
        lines = [
            f"{len(self.added)} added, {len(self.replaced)} replaced, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, {len(self.skipped)} skipped; "
            f"{self.chunks_written} chunks written, {self.chunks_total} in the index "
            f"(embeddings: {self.embedder}, {self.seconds:.1f}s)"
        ]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        lines += [f"  removed {path}: not among the files indexed this time" for path in self.removed]
        if self.rebuilt:
            lines.append(f"  rebuilt from the files given: {self.rebuilt}")
        return "\n".join(lines)


def iter_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str, str | None]]:
    """Yield (file, source name, skip reason or None) for each file argument and each file under folders.

    Hidden names are passed over; a symlink (to a file or a folder) that leads out of the folder
    given, and a name starting with `..`, come with a skip reason.
    """
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise ConfigError(f"No such file or folder: {root}")
        if not root.is_dir():
            yield root, _source(root), None
            continue
        real_root = root.resolve()
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            for name in sorted(d for d in dirnames if d.startswith("..") or _leaves(here / d, real_root)):
                yield here / name, _source(here / name), _why_skipped(here / name, real_root)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") and not name.startswith(".."):
                    continue
                path = here / name
                yield path, _source(path), _why_skipped(path, real_root)


def _source(path: Path) -> str:
    return Path(os.path.normpath(path)).as_posix()


def _leaves(path: Path, real_root: Path) -> bool:
    """True for a symlink whose target lies outside `real_root`."""
    return path.is_symlink() and not path.resolve().is_relative_to(real_root)


def _why_skipped(path: Path, real_root: Path) -> str | None:
    if path.name.startswith(".."):
        return "name starts with '..'"
    if _leaves(path, real_root):
        kind = "folder" if path.is_dir() else "file"
        return f"symlink to a {kind} outside {real_root}: not followed"
    return None


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
    prune: bool = True,
    lock_timeout: float = _store.DEFAULT_LOCK_TIMEOUT,
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
        prune: remove the chunks of files under the folders given that this run did not index.
        lock_timeout: seconds to wait for another ingest into the same folder to finish.

    Raises:
        ConfigError: a path does not exist, nothing in `paths` can be indexed, or the folder stayed
            locked by another ingest for `lock_timeout` seconds.
    """
    started = time.perf_counter()
    paths = list(paths)
    options = _Options(
        splitter=make_splitter(chunk_size, chunk_overlap),
        max_file_mb=max_file_mb,
        show=sys.stderr.isatty() if progress is None else progress,
        prune=prune,
    )
    if isinstance(index, LocalIndex):
        report = _update(index, paths, options)
    else:
        folder = Path(index)
        _store.refuse_foreign(folder)
        # Held from load to save, so a concurrent ingest builds on this one's result.
        with _store.writer_lock(folder, timeout=lock_timeout):
            _store.clean_stale(folder)
            target, rebuilt = _open_for_update(folder, embeddings)
            report = _update(target, paths, options, rebuilt=rebuilt)
            report.index_path = str(folder)
            if report.changed:
                target.save(folder)
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
    splitter: RecursiveCharacterTextSplitter
    max_file_mb: float
    show: bool
    prune: bool


def _open_for_update(folder: Path, embeddings: str) -> tuple[LocalIndex, str | None]:
    """The index to update: the saved one, a new one, or a new one replacing a damaged one (and why)."""
    if not _store.has_index(folder):
        return LocalIndex(embeddings=embeddings), None
    try:
        return LocalIndex.load(folder), None
    except _store.DamagedIndexError as exc:
        logger.warning("%s Rebuilding it from the files given.", exc)
        with contextlib.suppress(_store.DamagedIndexError, KeyError, TypeError):
            embeddings = str(_store.read_manifest(folder)["embedder"]["name"])
        return LocalIndex(embeddings=embeddings), str(exc)


def _update(
    index: LocalIndex, paths: list[str | Path], options: _Options, *, rebuilt: str | None = None
) -> IngestReport:
    """Plan the change to `index`, refuse input with nothing to index, prune, and apply it."""
    report = IngestReport(embedder=index.embedder_name, rebuilt=rebuilt)
    known = _known_sources(index)
    fresh, stale = plan_ingest(
        paths,
        known,
        splitter=options.splitter,
        max_file_mb=options.max_file_mb,
        show=options.show,
        report=report,
    )
    if not (report.added or report.replaced or report.unchanged):
        raise ConfigError(_nothing_to_ingest(paths, report))
    if options.prune:
        indexed = {*report.added, *report.replaced, *report.unchanged}
        report.removed = [s for s in known if s not in indexed and _under_folders(s, paths)]
        stale += [cid for s in report.removed for cid in known[s][1]]
    if report.changed:
        index.delete(stale)
        index.upsert(fresh, show_progress=options.show)
    report.chunks_written = len(fresh)
    report.chunks_total = len(index)
    return report


def _nothing_to_ingest(paths: list[str | Path], report: IngestReport) -> str:
    where = ", ".join(str(p) for p in paths) or "(no paths)"
    reasons = "; ".join(f"{s}: {r}" for s, r in report.skipped[:3])
    more = f" ({len(report.skipped)} skipped: {reasons}{'; ...' if len(report.skipped) > 3 else ''})"
    return (
        f"Nothing to index in {where}{more if report.skipped else ''}. Give files or folders with "
        f"{', '.join(sorted(SUPPORTED_SUFFIXES))} files that hold text; the index was not changed."
    )


def _under_folders(source: str, paths: list[str | Path]) -> bool:
    """True when `source` names a file under one of the folders in `paths`."""
    name = PurePosixPath(source)
    for raw in paths:
        if not Path(raw).is_dir():
            continue
        root = PurePosixPath(_source(Path(raw)))
        if root == PurePosixPath("."):
            if not name.is_absolute() and name.parts[:1] != ("..",):
                return True
        elif name.is_relative_to(root):
            return True
    return False


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
    for path, source, reason in tqdm(files, desc="Reading", unit="file", disable=not show):
        try:
            if reason is not None:
                raise SkipFile(reason)
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
        chunks = chunk_document(text, source=source, file_hash=digest, kind=path.suffix, splitter=splitter)
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


def chunk_document(
    text: str, *, source: str, file_hash: str, kind: str, splitter: RecursiveCharacterTextSplitter
) -> list[Chunk]:
    """Split one document's text into chunks with content-hash ids (the same on every ingest path).

    `kind` is the file's suffix (`.md`) or another type name; it is stored as the `type` metadata.
    """
    pieces = [p for p in splitter.split_text(text) if p.strip()]
    meta = {"source": source, "file_hash": file_hash, "type": kind.lower().lstrip(".")}
    return [
        Chunk(id=chunk_id(source, i, p), text=p, metadata={**meta, "chunk_index": i})
        for i, p in enumerate(pieces)
    ]


def read_file_bytes(path: Path, max_file_mb: float) -> bytes:
    """The bytes of a file to ingest, or SkipFile (unsupported type, too large, unreadable)."""
    return _read_bytes(path, max_file_mb)


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
