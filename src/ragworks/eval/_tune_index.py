"""Indexes for tuning trials that change the chunking: one build per distinct chunking, reused after.

Without documents to ingest, trials use the config's own index unchanged. With them (`--docs`), a
trial's `ingest.chunk_size`, `ingest.chunk_overlap` and `ingest.embeddings` name one index folder
under the work folder, built on first use; the retriever of the trial's config points at it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from ragworks.config import AgentConfig
from ragworks.errors import ConfigError

logger = logging.getLogger(__name__)


class IndexCache:
    """Builds (once) and hands out the index folder for each chunking a trial asks for."""

    def __init__(self, docs: Sequence[str | Path], workdir: Path) -> None:
        self.docs = [Path(p) for p in docs]
        self.workdir = workdir
        self.builds = 0
        """How many indexes were built (the rest were reused)."""
        self._built: dict[tuple[int, int, str], Path] = {}

    def config_for(self, cfg: AgentConfig) -> AgentConfig:
        """`cfg` with its retriever on the index of its chunking (built now when new)."""
        if cfg.retriever.type != "local":
            raise ConfigError("--docs builds local indexes: set retriever.type to 'local' in the config.")
        ingest = cfg.ingest
        if ingest.chunk_overlap >= ingest.chunk_size:
            raise ConfigError(
                f"ingest.chunk_overlap ({ingest.chunk_overlap}) must be below ingest.chunk_size "
                f"({ingest.chunk_size})."
            )
        key = (ingest.chunk_size, ingest.chunk_overlap, ingest.embeddings)
        folder = self._built.get(key)
        if folder is None:
            folder = self._build(*key)
            self._built[key] = folder
        out = cfg.model_copy(deep=True)
        out.retriever.index = str(folder)
        return out

    def _build(self, chunk_size: int, chunk_overlap: int, embeddings: str) -> Path:
        from ragworks.retrieval.ingest import ingest

        folder = self.workdir / f"index-{chunk_size}-{chunk_overlap}-{embeddings}"
        if folder.exists():
            shutil.rmtree(folder)
        report = ingest(
            self.docs,
            folder,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            embeddings=embeddings,
            progress=False,
        )
        self.builds += 1
        logger.info("Tune index %s: %d chunks", folder.name, report.chunks_total)
        return folder
