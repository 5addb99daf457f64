"""The index folder under faults: damaged files, killed writers, concurrent writers, stale leftovers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ragworks.errors import ConfigError, IndexFormatError
from ragworks.retrieval import _store
from ragworks.retrieval.ingest import ingest
from ragworks.retrieval.local import MANIFEST, Chunk, LocalIndex

STEPS = ("locked", "data-written", "data-synced", "data-renamed", "manifest-written", "manifest-swapped")


def _write_docs(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.md").write_text(f"# {name}\n\nA note about {name} and nothing else.\n")
    return folder


def _sources(index: Path) -> set[str]:
    return {Path(c.metadata["source"]).stem for c in LocalIndex.load(index).chunks()}


def _data(index: Path) -> Path:
    return index / json.loads((index / MANIFEST).read_text())["data"]


@pytest.fixture
def built(tmp_path: Path) -> Path:
    index = tmp_path / "idx"
    ingest([_write_docs(tmp_path / "docs", ["alpha", "beta", "gamma"])], index, embeddings="hashing")
    return index


# ------------------------------------------------------------------ damage is detected, the file named
def _drop_a_line(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 16, len(data)):  # the last vector's bytes; the npy header stays valid
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "file"),
    [
        (_drop_a_line, "chunks.jsonl"),
        (_flip_bytes, "vectors.npy"),
        (_empty, "chunks.jsonl"),
        (_empty, "vectors.npy"),
    ],
)
def test_damaged_files_are_named_with_the_rebuild_command(built: Path, damage, file: str) -> None:  # type: ignore[no-untyped-def]
    damage(_data(built) / file)
    with pytest.raises(IndexFormatError) as err:
        LocalIndex.load(built)
    message = str(err.value)
    assert str(_data(built) / file) in message
    assert f"ragworks ingest DOCS --index {built}" in message


def test_emptied_bm25_file_and_missing_file_are_named(built: Path) -> None:
    vocab = next(p for p in (_data(built) / "bm25").iterdir() if "vocab" in p.name)
    _empty(vocab)
    with pytest.raises(IndexFormatError, match=f"{vocab}.*damaged"):
        LocalIndex.load(built)
    vocab.unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        LocalIndex.load(built)


def test_without_hashing_sizes_and_rows_are_still_checked(built: Path) -> None:
    _drop_a_line(_data(built) / "chunks.jsonl")
    with pytest.raises(IndexFormatError, match=r"chunks\.jsonl"):
        LocalIndex.load(built, verify=False)


def _version_1_copy(built: Path, legacy: Path) -> Path:
    """The index at `built` in the version 1 layout: data files beside the manifest, no checksums."""
    legacy.mkdir()
    manifest = json.loads((built / MANIFEST).read_text())
    for name in ("chunks.jsonl", "vectors.npy"):
        (legacy / name).write_bytes((_data(built) / name).read_bytes())
    for key in ("data", "files"):
        manifest.pop(key)
    (legacy / MANIFEST).write_text(json.dumps({**manifest, "version": 1}))
    return legacy


def test_a_version_1_folder_loads_and_its_row_counts_are_checked(built: Path, tmp_path: Path) -> None:
    legacy = _version_1_copy(built, tmp_path / "v1")
    assert len(LocalIndex.load(legacy)) == 3
    _drop_a_line(legacy / "chunks.jsonl")
    with pytest.raises(IndexFormatError, match="2 rows, the index has 3"):
        LocalIndex.load(legacy)


def test_writing_over_a_version_1_folder_turns_it_into_version_2(built: Path, tmp_path: Path) -> None:
    legacy = _version_1_copy(built, tmp_path / "v1")
    report = ingest([_write_docs(tmp_path / "more", ["delta"])], legacy, embeddings="hashing")
    assert report.added and json.loads((legacy / MANIFEST).read_text())["version"] == 2
    assert sorted(p.name for p in legacy.iterdir()) == sorted([MANIFEST, _data(legacy).name])
    assert _sources(legacy) == {"alpha", "beta", "gamma", "delta"}


def test_ingest_rebuilds_a_damaged_index_and_says_so(built: Path, tmp_path: Path) -> None:
    _flip_bytes(_data(built) / "vectors.npy")
    report = ingest([tmp_path / "docs"], built, embeddings="hashing")
    assert report.rebuilt and "vectors.npy" in report.rebuilt
    assert "rebuilt" in report.summary()
    assert _sources(built) == {"alpha", "beta", "gamma"}


def test_a_manifest_pointing_outside_is_refused(built: Path) -> None:
    manifest = json.loads((built / MANIFEST).read_text())
    (built / MANIFEST).write_text(json.dumps({**manifest, "data": "../elsewhere"}))
    with pytest.raises(IndexFormatError, match="no valid data folder"):
        LocalIndex.load(built)


# ------------------------------------------------------------------ a writer stopped at any step
def _stopped_ingest(docs: Path, index: Path, step: str) -> int:
    """Ingest in a forked child that dies at `step` as under `kill -9` (no cleanup runs); its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:

            def die(name: str) -> None:
                if name == step:
                    os._exit(137)

            _store._step = die  # type: ignore[assignment]
            ingest([docs], index, embeddings="hashing")
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1] >> 8


@pytest.mark.parametrize("step", STEPS)
def test_a_writer_killed_at_any_step_leaves_the_old_or_the_new_index(
    built: Path, tmp_path: Path, step: str
) -> None:
    docs = _write_docs(tmp_path / "docs", ["delta"])
    assert _stopped_ingest(docs, built, step) == 137
    found = _sources(built)
    new = {"alpha", "beta", "gamma", "delta"}
    assert found in ({"alpha", "beta", "gamma"}, new)
    assert found == (new if step == "manifest-swapped" else {"alpha", "beta", "gamma"})
    report = ingest([docs], built, embeddings="hashing")  # the next writer cleans up and goes on
    assert _sources(built) == new
    assert report.changed == (step != "manifest-swapped")
    assert sorted(p.name for p in built.iterdir()) == sorted([MANIFEST, _data(built).name])


def test_a_first_ingest_killed_leaves_no_index_and_the_next_one_works(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "docs", ["alpha"])
    assert _stopped_ingest(docs, tmp_path / "idx", "data-renamed") == 137
    with pytest.raises(IndexFormatError, match="not a ragworks index"):
        LocalIndex.load(tmp_path / "idx")
    ingest([docs], tmp_path / "idx", embeddings="hashing")
    assert _sources(tmp_path / "idx") == {"alpha"}


CHILD = textwrap.dedent(
    """
    import sys, time
    from ragworks.retrieval import _store
    from ragworks.retrieval.ingest import ingest
    pause = float(sys.argv[3])

    def step(name):  # say where the writer is, and widen the window after each step
        print(name, flush=True)
        time.sleep(pause)

    _store._step = step
    print("ready", flush=True)
    sys.stdin.readline()
    ingest([sys.argv[1]], sys.argv[2], embeddings="hashing", lock_timeout=60)
    """
)


def _child(docs: Path, index: Path, pause: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(docs), str(index), str(pause)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_broken_index(tmp_path: Path) -> None:
    rng = random.Random(7)
    runs = []
    for n, step in enumerate(STEPS):  # each on its own copy, started together: one start-up wait for all
        index = tmp_path / f"idx{n}"
        ingest([_write_docs(tmp_path / f"old{n}", ["alpha", "beta"])], index, embeddings="hashing")
        runs.append((index, step, _child(_write_docs(tmp_path / f"new{n}", ["delta"]), index, 0.05)))
    outcomes = []
    for index, step, proc in runs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        _go(proc)
        while proc.stdout.readline().strip() != step:
            pass
        time.sleep(rng.uniform(0.0, 0.08))  # within the pause after `step`, or into the work after it
        proc.kill()
        proc.wait()
        outcomes.append(_sources(index))
        assert outcomes[-1] in ({"alpha", "beta"}, {"alpha", "beta", "delta"}), step
    assert outcomes[0] == {"alpha", "beta"} and outcomes[-1] == {"alpha", "beta", "delta"}


# ------------------------------------------------------------------ two writers at once
def _forked(body) -> int:  # type: ignore[no-untyped-def]
    """Run `body()` in a forked child process; its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    return os.waitpid(pid, 0)[1] >> 8


def _slow_ingest(docs: Path, index: Path, log: Path, pause: float) -> None:  # pragma: no cover - a child
    import logging

    logging.getLogger("ragworks").addHandler(logging.FileHandler(log))
    _store._step = lambda name: time.sleep(pause)  # type: ignore[assignment]
    ingest([docs], index, embeddings="hashing", lock_timeout=30)


def test_two_concurrent_ingests_lose_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    one, two = _write_docs(tmp_path / "one", ["alpha", "beta"]), _write_docs(tmp_path / "two", ["gamma"])
    first = _forked(lambda: _slow_ingest(one, index, tmp_path / "one.log", 0.1))
    time.sleep(0.15)  # the first holds the lock now: it pauses 0.1 s at each of its steps
    second = _forked(lambda: _slow_ingest(two, index, tmp_path / "two.log", 0.0))
    assert [_exit_code(first), _exit_code(second)] == [0, 0]
    assert "waiting up to 30 s" in (tmp_path / "two.log").read_text()
    assert _sources(index) == {"alpha", "beta", "gamma"}


def test_a_writer_that_cannot_get_the_lock_in_time_is_refused(built: Path, tmp_path: Path) -> None:
    read, write = os.pipe()

    def hold() -> None:  # pragma: no cover - a child
        with _store.writer_lock(built):
            os.write(write, b"x")
            time.sleep(30)

    holder = _forked(hold)
    try:
        assert os.read(read, 1) == b"x"
        with pytest.raises(ConfigError, match=r"another ingest \(pid \d+\) after 0 s.*--lock-timeout"):
            ingest([tmp_path / "docs"], built, embeddings="hashing", lock_timeout=0.2)
    finally:
        os.kill(holder, 9)
        os.waitpid(holder, 0)


# ------------------------------------------------------------------ leftovers and readers
def test_stale_temp_folders_are_removed_and_the_index_kept(built: Path, tmp_path: Path) -> None:
    current = _data(built).name
    leftovers = [
        built / ".tmp-data-0123456789abcdef",
        built / "data-0123456789abcdef",
        built / f".{MANIFEST}.tmp-01234567",
        tmp_path / ".idx.tmp-0123abcd",  # written by older ragworks beside the folder
        tmp_path / ".idx.old-0123abcd",
    ]
    for path in leftovers:
        path.mkdir() if "data" in path.name or ".idx." in path.name else path.write_text("{}")
    report = ingest([tmp_path / "docs"], built, embeddings="hashing")
    assert not report.changed
    assert [p for p in leftovers if p.exists()] == []
    assert _data(built).name == current and _sources(built) == {"alpha", "beta", "gamma"}


def test_a_reader_that_loses_a_race_with_a_swap_reads_the_new_index(built: Path) -> None:
    calls = []

    def reader(manifest, data):  # type: ignore[no-untyped-def]
        calls.append(data)
        if len(calls) == 1:  # a writer swaps the index in while this reader is half-way
            index = LocalIndex.load(built)
            index.upsert([Chunk(id="z", text="zebra", metadata={"source": "z.md"})])
            index.save(built)
        return LocalIndex._read(built, manifest, data)

    index = _store.read_index(built, reader)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert "z" in index
