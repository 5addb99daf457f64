"""Retrieval: the local hybrid index, ingestion, and retrievers built from config."""

from ragworks.retrieval.fusion import FusionParams
from ragworks.retrieval.ingest import IngestReport, ingest
from ragworks.retrieval.local import BM25Params, Chunk, LocalIndex, LocalRetriever
from ragworks.retrieval.registry import get_retriever

__all__ = [
    "BM25Params",
    "Chunk",
    "FusionParams",
    "IngestReport",
    "LocalIndex",
    "LocalRetriever",
    "get_retriever",
    "ingest",
]
