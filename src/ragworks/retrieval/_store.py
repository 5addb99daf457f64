"""The index folder on disk: a manifest with checksums, atomic swaps and a writer lock.

Layout (format version 2):

    INDEX/ragworks_index.json   the manifest: settings, the data folder it names, and for every
                                data file its size, sha256 and (for row files) its row count
    INDEX/data-<id>/            the data files (chunks.jsonl, vectors.npy, bm25/, ann.faiss)
    .INDEX.lock                 beside the folder: the writer lock (flock), holding the writer's pid

A writer builds a new data folder under a temporary name, fsyncs it, renames it to `data-<id>`,
then replaces the manifest with one naming it (write, fsync, `os.replace`). The manifest is the
only commit point, so a writer killed at any moment leaves either the old or the new index. The
old data folder is removed after the swap; leftovers of a killed writer are removed by the next
one, under the lock, so no live writer can own them. A reader that loses a race with a swap (its
data folder removed under it) reads the new manifest again.

Version 1 folders (the data files beside the manifest, no checksums) are still read, with row
counts checked; the next write turns them into version 2.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ragworks.errors import IndexFormatError
from ragworks.retrieval import _lock

logger = logging.getLogger(__name__)

INDEX_FORMAT = "ragworks-local-index"
INDEX_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "ragworks_index.json"
DEFAULT_LOCK_TIMEOUT = _lock.DEFAULT_LOCK_TIMEOUT

LEGACY_ENTRIES = ("chunks.jsonl", "vectors.npy", "bm25", "ann.faiss")
"""Where version 1 kept its data: beside the manifest."""

_DATA_NAME = re.compile(r"data-[0-9a-f]{8,32}")
_TMP_PREFIX = ".tmp-"
_READ_ATTEMPTS = 3

T = TypeVar("T")


class DamagedIndexError(IndexFormatError):
    """A data file of an index does not match its manifest (a rebuild fixes it)."""


def rebuild_hint(folder: Path) -> str:
    """The command that rebuilds the index at `folder`."""
    return f"ragworks ingest DOCS --index {folder}"


def _step(name: str) -> None:
    """A named point of a write; tests replace it to stop a writer there (as `kill -9` would)."""


# ------------------------------------------------------------------ reading
def has_index(folder: Path) -> bool:
    """True when `folder` holds a manifest (an index, possibly damaged or foreign)."""
    return (folder / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of `folder`; a missing, damaged, old or foreign folder is an IndexFormatError."""
    hint = f"Build one with: {rebuild_hint(folder)}"
    if not folder.is_dir():
        raise IndexFormatError(f"No index at {folder}. {hint}")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{folder} is not a ragworks index (no {MANIFEST}). {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedIndexError(
            f"{folder / MANIFEST} is damaged ({exc}). Rebuild it: {rebuild_hint(folder)}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexFormatError(f"{folder} holds a {found!r} index, not a ragworks one. {hint}")
    if manifest.get("version") not in READABLE_VERSIONS:
        raise IndexFormatError(
            f"{folder} was written in index format version {manifest.get('version')}; this ragworks "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}. Upgrade ragworks, or remove the "
            f"folder and rebuild it: {rebuild_hint(folder)}"
        )
    return manifest


def data_dir(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """The folder holding the data files the manifest describes."""
    if manifest["version"] == 1:
        return folder
    name = manifest.get("data")
    if not isinstance(name, str) or not _DATA_NAME.fullmatch(name):
        raise DamagedIndexError(
            f"{folder / MANIFEST} names no valid data folder ({name!r}). Rebuild it: {rebuild_hint(folder)}"
        )
    return folder / name


def damaged(folder: Path, path: Path, what: str) -> DamagedIndexError:
    """The error for a data file that does not match the manifest, naming it and the fix."""
    return DamagedIndexError(
        f"Index file {path} is damaged: {what}. Rebuild the index: {rebuild_hint(folder)}"
    )


def verify(folder: Path, manifest: Mapping[str, Any], *, hashes: bool = True) -> None:
    """Check every data file against the manifest: present, the recorded size and sha256."""
    if manifest["version"] == 1:
        return  # no checksums recorded; row counts are checked by the reader
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise DamagedIndexError(
            f"{folder / MANIFEST} lists no data files. Rebuild it: {rebuild_hint(folder)}"
        )
    base = data_dir(folder, manifest)
    for rel, meta in files.items():
        path = base / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise damaged(folder, path, "the file is missing") from None
        if size != meta.get("bytes"):
            raise damaged(folder, path, f"{size} bytes, the manifest says {meta.get('bytes')}")
        if hashes and file_sha256(path) != meta.get("sha256"):
            raise damaged(folder, path, "its sha256 does not match the manifest (the bytes changed)")


def file_sha256(path: Path) -> str:
    """The sha256 of a file, hashed from a memory map in one call.

    One call releases the GIL once for the whole file; hashing block by block would wait for the
    GIL after every block while a reader parses in another thread.
    """
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return hashlib.sha256(b"").hexdigest()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return hashlib.sha256(view).hexdigest()


def check_rows(folder: Path, path: Path, found: int, expected: int) -> None:
    """A row file must hold as many rows as the index has chunks."""
    if found != expected:
        raise damaged(folder, path, f"{found} rows, the index has {expected} chunks")


def read_index(folder: Path, reader: Callable[[Mapping[str, Any], Path], T], *, hashes: bool = True) -> T:
    """Verify the folder and run `reader(manifest, data folder)`, again if a writer swapped it meanwhile.

    Any file error is an IndexFormatError naming the file and the rebuild command.
    """
    for attempt in range(_READ_ATTEMPTS):
        manifest = read_manifest(folder)
        try:
            verify(folder, manifest, hashes=False)  # sizes first: cheap, and catches most damage
            if not hashes:
                return reader(manifest, data_dir(folder, manifest))
            # Checksums in a thread while the reader parses (hashlib releases the GIL): a load then
            # costs about the longer of the two instead of their sum.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragworks-verify") as pool:
                checked = pool.submit(verify, folder, manifest)
                try:
                    result = reader(manifest, data_dir(folder, manifest))
                finally:
                    checked.result()  # a checksum error explains a reader's error best: it wins
            return result
        except (OSError, IndexFormatError) as exc:
            if attempt + 1 < _READ_ATTEMPTS and _swapped_since(folder, manifest):
                continue  # a writer replaced the index while we read it: read the new one
            if isinstance(exc, IndexFormatError):
                raise
            where = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else folder
            raise damaged(folder, where, exc.strerror or str(exc)) from exc
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _swapped_since(folder: Path, manifest: Mapping[str, Any]) -> bool:
    try:
        return read_manifest(folder).get("data") != manifest.get("data")
    except IndexFormatError:
        return False


# ------------------------------------------------------------------ writing
def write_index(
    folder: Path,
    manifest: Mapping[str, Any],
    write_files: Callable[[Path], Mapping[str, int]],
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> None:
    """Write a new version of the index at `folder` and swap it in atomically, under the writer lock.

    `write_files(tmp)` writes the data files into `tmp` and returns the row count of each row file
    (relative path -> rows); the sizes and checksums of everything it wrote go into the manifest.
    """
    refuse_foreign(folder)
    with writer_lock(folder, timeout=lock_timeout):
        folder.mkdir(parents=True, exist_ok=True)
        clean_stale(folder)
        name = f"data-{uuid.uuid4().hex[:16]}"
        tmp = folder / f"{_TMP_PREFIX}{name}"
        tmp.mkdir()
        try:
            rows = write_files(tmp)
            _step("data-written")
            files = _describe(tmp, rows)
            _fsync_tree(tmp)
            _step("data-synced")
            os.replace(tmp, folder / name)
            _fsync_dir(folder)
            _step("data-renamed")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        previous = _current_data(folder)
        try:
            _replace_manifest(folder, {**manifest, "version": INDEX_VERSION, "data": name, "files": files})
        except BaseException:
            if _current_data(folder) != name:  # not swapped in: nothing names the new data folder
                shutil.rmtree(folder / name, ignore_errors=True)
            raise
        _step("manifest-swapped")
        _remove_old(folder, previous)
        _step("old-removed")


def refuse_foreign(folder: Path) -> None:
    """A folder with other things in it and no manifest is not ours to overwrite.

    A killed first write leaves a data folder without a manifest: that one is ours.
    """
    if folder.exists() and not folder.is_dir():
        raise IndexFormatError(f"{folder} is a file, not an index folder; choose an empty or new folder.")
    if folder.exists() and not has_index(folder):
        visible = [
            p for p in folder.iterdir() if not p.name.startswith(".") and not _DATA_NAME.fullmatch(p.name)
        ]
        if visible:
            raise IndexFormatError(
                f"{folder} exists and is not a ragworks index; choose an empty or new folder."
            )


def _describe(tmp: Path, rows: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = path.relative_to(tmp).as_posix()
        files[rel] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        if rel in rows:
            files[rel]["rows"] = rows[rel]
    return files


def _replace_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    tmp = folder / f".{MANIFEST}{_TMP_PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _step("manifest-written")
        os.replace(tmp, folder / MANIFEST)
        _fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_data(folder: Path) -> str | None:
    try:
        name = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _remove_old(folder: Path, previous: str | None) -> None:
    if previous and _DATA_NAME.fullmatch(previous):
        shutil.rmtree(folder / previous, ignore_errors=True)
    for legacy in LEGACY_ENTRIES:  # a version 1 folder just turned into version 2
        _remove(folder / legacy)


def clean_stale(folder: Path) -> list[Path]:
    """Remove what killed writers left behind; call only while holding the writer lock.

    Holding the lock means no live writer owns any of it: temporary folders and manifests, data
    folders the manifest does not name, and the temporary siblings older ragworks wrote.
    """
    if not folder.is_dir():
        return []
    current = _current_data(folder)
    doomed = [
        p
        for p in folder.iterdir()
        if p.name.startswith(_TMP_PREFIX)
        or p.name.startswith(f".{MANIFEST}{_TMP_PREFIX}")
        or (_DATA_NAME.fullmatch(p.name) and p.name != current)
        or (current is not None and p.name in LEGACY_ENTRIES)
    ]
    if has_index(folder):  # only then is a sibling from an older writer surely not the last copy
        doomed += [
            p
            for p in folder.parent.glob(f".{folder.name}.*")
            if re.fullmatch(rf"\.{re.escape(folder.name)}\.(tmp|old)-[0-9a-f]{{8}}", p.name)
        ]
    for path in doomed:
        logger.info("Removing %s, left by an ingest that did not finish", path)
        _remove(path)
    return doomed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextmanager
def writer_lock(folder: Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the index's writer lock (see `_lock.writer_lock`)."""
    with _lock.writer_lock(folder, timeout=timeout) as first:
        if first:
            _step("locked")
        yield
