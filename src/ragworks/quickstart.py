"""The quickstart: index the docs ragworks ships, ask them questions, show where to look next."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from ragworks.retrieval.ingest import IngestReport, ingest

QUESTIONS = (
    "What is ragworks?",
    "How does hybrid search work?",
    "How do I look at the traces of my agent?",
)


def shipped_docs() -> Path:
    """The folder of documents about ragworks that the package ships."""
    return Path(str(files("ragworks") / "data" / "docs"))


def prepare(workdir: Path, *, embeddings: str = "auto") -> tuple[Path, IngestReport]:
    """Copy the shipped docs into `workdir/docs` and index them into `workdir/index`."""
    docs = workdir / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for src in sorted(shipped_docs().glob("*.md")):
        target = docs / src.name
        if not target.exists() or target.read_bytes() != src.read_bytes():
            shutil.copyfile(src, target)
    return workdir / "index", ingest([docs], workdir / "index", embeddings=embeddings)
