"""Create a Databricks Vector Search Delta Sync index over a table of chunks, through the official client.

The table is the one `ragworks ingest --spark --table` writes (`id, text, source, chunk_index,
file_hash, embedding`), or any Delta table with a primary key and a text column. The index either
syncs the table's precomputed vectors (`embedding_column`, the default: queries are then embedded
by ragworks with the same embedder) or has Vector Search embed a text column with a model serving
endpoint (`embedding_source_column` + `embedding_model_endpoint`). `retriever_yaml` is the
retriever config that then points an agent at the index.

Example:
    >>> created = create_delta_sync_index(IndexRequest(                # doctest: +SKIP
    ...     table="main.docs.chunks", endpoint="vs", index="main.docs.chunks_index", embeddings="minilm"))
    >>> print(retriever_yaml(created))                                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from ragworks.errors import ConfigError, RetrievalError
from ragworks.retrieval.vector_search import BACKEND, _client_class, _credentials, status_of

logger = logging.getLogger(__name__)

PipelineType = Literal["TRIGGERED", "CONTINUOUS"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexRequest:
    """A Delta Sync index to create."""

    table: str
    """The source Delta table (catalog.schema.table)."""
    endpoint: str
    """The Vector Search endpoint that hosts the index."""
    index: str
    """The index's Unity Catalog name (catalog.schema.index)."""
    primary_key: str = "id"
    text_column: str = "text"
    embedding_column: str | None = "embedding"
    """The table's column of precomputed vectors (ignored with `embedding_source_column`)."""
    embedding_dimension: int | None = None
    """The vectors' size; default: that of `embeddings`."""
    embeddings: str | None = None
    """The ragworks embedder that made the vectors (`minilm`, `hashing`): it embeds queries too."""
    embedding_source_column: str | None = None
    """A text column Vector Search embeds itself, with `embedding_model_endpoint`."""
    embedding_model_endpoint: str | None = None
    pipeline_type: PipelineType = "TRIGGERED"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedIndex:
    """What was created, and what a retriever needs to query it."""

    request: IndexRequest
    managed: bool
    """True when Vector Search embeds the text itself (no `options.embeddings` needed)."""
    description: dict[str, Any]


def _body_options(request: IndexRequest) -> dict[str, Any]:
    """The client's keyword arguments for the embedding part of the index."""
    if request.embedding_source_column:
        if not request.embedding_model_endpoint:
            raise ConfigError(
                "--embedding-source-column needs --embedding-model-endpoint: the serving endpoint that "
                "embeds the column (e.g. databricks-gte-large-en)."
            )
        return {
            "embedding_source_column": request.embedding_source_column,
            "embedding_model_endpoint_name": request.embedding_model_endpoint,
        }
    if not request.embedding_column:
        raise ConfigError(
            "Name the vectors: --embedding-column COLUMN, or --embedding-source-column with an endpoint."
        )
    dimension = request.embedding_dimension
    if dimension is None and request.embeddings:
        from ragworks.embeddings import get_embedder

        embedder = get_embedder(request.embeddings)
        dimension = embedder.dim if embedder is not None else None
    if not dimension:
        raise ConfigError(
            f"The index syncs the precomputed vectors of {request.embedding_column!r}: pass --embeddings "
            "(the embedder that made them: minilm or hashing) or --embedding-dimension N."
        )
    return {"embedding_vector_column": request.embedding_column, "embedding_dimension": int(dimension)}


def create_delta_sync_index(request: IndexRequest) -> CreatedIndex:
    """Create the Delta Sync index (one call of the official client) and return its description.

    Raises:
        ConfigError: the options are incomplete, the index exists, the endpoint or table is unknown,
            or access is refused.
        RetrievalError: Vector Search failed otherwise.
    """
    options = _body_options(request)
    credentials, _ = _credentials(None)
    client = _client_class()(**credentials, disable_notice=True)
    logger.info("Vector Search: creating Delta Sync index %s over %s", request.index, request.table)
    try:
        index = client.create_delta_sync_index(
            endpoint_name=request.endpoint,
            index_name=request.index,
            primary_key=request.primary_key,
            source_table_name=request.table,
            pipeline_type=request.pipeline_type,
            **options,
        )
        description = index.describe()
    except Exception as exc:
        raise _explain(exc, request) from None
    return CreatedIndex(
        request=request, managed="embedding_source_column" in options, description=description
    )


def _explain(exc: Exception, request: IndexRequest) -> Exception:
    status, detail = status_of(exc), " ".join((str(exc) or type(exc).__name__).split())
    if "ALREADY_EXISTS" in detail or status == 409:
        return ConfigError(
            f"Vector Search index {request.index!r} already exists ({detail}); pick another --index, or "
            "point the retriever at it (its table syncs on its own schedule)."
        )
    if status == 404:
        return ConfigError(
            f"Vector Search could not create {request.index!r} ({detail}). Check --endpoint "
            f"{request.endpoint!r} and --table {request.table!r} (catalog.schema.table)."
        )
    if status in (401, 403):
        return ConfigError(
            f"Databricks refused to create Vector Search index {request.index!r} (HTTP {status}: {detail}). "
            "Check DATABRICKS_TOKEN and your permissions on the endpoint, the table and the schema."
        )
    if status == 400:
        return ConfigError(
            f"Vector Search rejected the index {request.index!r}: {detail}. Check the columns."
        )
    return RetrievalError(f"Vector Search create failed for {request.index!r}: {detail}", backend=BACKEND)


def retriever_config(created: CreatedIndex) -> dict[str, Any]:
    """The `retriever:` section of an agent config that queries the new index."""
    request = created.request
    options: dict[str, Any] = {"text_column": request.embedding_source_column or request.text_column}
    if not created.managed:
        options["embeddings"] = request.embeddings or "<the embedder that made the vectors: minilm | hashing>"
    else:
        options["embedding_endpoint"] = request.embedding_model_endpoint
    return {
        "type": BACKEND,
        "index": request.index,
        "endpoint": request.endpoint,
        "k": 5,
        "mode": "hybrid",
        "options": options,
    }


def retriever_yaml(created: CreatedIndex) -> str:
    """`retriever_config` as the YAML to paste into agent.yaml."""
    return yaml.safe_dump({"retriever": retriever_config(created)}, sort_keys=False)
