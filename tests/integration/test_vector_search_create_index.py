"""`ragworks vector-search create-index`: the official client creates a Delta Sync index on the emulator.

The printed retriever config is then used as it is: the retriever it names queries the new index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml
from click.testing import Result
from typer.testing import CliRunner

from ragworks.retrieval import LocalIndex, get_retriever
from ragworks.scale import deploy_commands
from ragworks.testing.contracts import CONTRACT_CORPUS
from ragworks.testing.emulators.vector_search import VectorSearchEmulator

TOKEN = "dapi-create-index-0123"
TABLE = "main.docs.chunks"
_AUTH_ENV = (
    "DATABRICKS_HOST",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_CONFIG_PROFILE",
    "DATABRICKS_AUTH_TYPE",
)


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[VectorSearchEmulator]:
    """An emulator with one table of chunks and one existing index; DATABRICKS_HOST/TOKEN point at it."""
    for name in _AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    table = LocalIndex(embeddings="hashing")
    table.upsert(CONTRACT_CORPUS)
    with VectorSearchEmulator(
        {"main.docs.taken": table}, token=TOKEN, endpoint="vs", tables={TABLE: table}
    ) as vs:
        monkeypatch.setenv("DATABRICKS_HOST", vs.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
        yield vs


def _create(*args: str, index: str = "main.docs.chunks_index") -> Result:
    app = typer.Typer()
    app.callback()(lambda: None)
    deploy_commands.register(app)
    base = ["vector-search", "create-index", "--table", TABLE, "--endpoint", "vs", "--index", index]
    return CliRunner().invoke(app, [*base, *args])


def _error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_index_of_precomputed_vectors_and_its_retriever_config(workspace: VectorSearchEmulator) -> None:
    result = _create("--embeddings", "hashing")

    assert result.exit_code == 0, result.output
    [body] = [r.body for r in workspace.requests if r.path.endswith("/endpoints/vs/indexes")]
    assert body == {
        "name": "main.docs.chunks_index",
        "index_type": "DELTA_SYNC",
        "primary_key": "id",
        "delta_sync_index_spec": {
            "source_table": TABLE,
            "pipeline_type": "TRIGGERED",
            "embedding_vector_columns": [{"name": "embedding", "embedding_dimension": 384}],
        },
    }
    config = yaml.safe_load(result.stdout)["retriever"]
    assert config == {
        "type": "databricks-vector-search",
        "index": "main.docs.chunks_index",
        "endpoint": "vs",
        "k": 5,
        "mode": "hybrid",
        "options": {"text_column": "text", "embeddings": "hashing"},
    }
    # The printed config, as it is, queries the new index (query vectors embedded here).
    docs = get_retriever({**config, "k": 3}).invoke("hybrid search")
    assert docs and all(d.id for d in docs)
    assert any(r.body.get("query_vector") for r in workspace.requests if r.path.endswith("/query"))


def test_an_index_that_embeds_a_text_column(workspace: VectorSearchEmulator) -> None:
    result = _create(
        "--embedding-source-column",
        "text",
        "--embedding-model-endpoint",
        "databricks-gte-large-en",
        "--pipeline-type",
        "continuous",
    )

    assert result.exit_code == 0, result.output
    [body] = [r.body for r in workspace.requests if r.path.endswith("/endpoints/vs/indexes")]
    assert body["delta_sync_index_spec"] == {
        "source_table": TABLE,
        "pipeline_type": "CONTINUOUS",
        "embedding_source_columns": [
            {"name": "text", "embedding_model_endpoint_name": "databricks-gte-large-en"}
        ],
    }
    config = yaml.safe_load(result.stdout)["retriever"]
    assert config["options"] == {"text_column": "text", "embedding_endpoint": "databricks-gte-large-en"}
    assert get_retriever(config).invoke("hybrid search")


def test_vectors_without_a_dimension_are_refused_before_any_request(workspace: VectorSearchEmulator) -> None:
    result = _create()

    assert result.exit_code == 1
    assert "pass --embeddings (the embedder that made them: minilm or hashing)" in _error_line(result)
    assert not [r for r in workspace.requests if r.path.endswith("/indexes")]


def test_a_source_column_needs_its_embedding_endpoint(workspace: VectorSearchEmulator) -> None:
    result = _create("--embedding-source-column", "text")

    assert result.exit_code == 1
    assert "--embedding-source-column needs --embedding-model-endpoint" in _error_line(result)


def test_an_existing_index_is_reported(workspace: VectorSearchEmulator) -> None:
    result = _create("--embedding-dimension", "384", index="main.docs.taken")

    assert result.exit_code == 1
    assert "Vector Search index 'main.docs.taken' already exists" in _error_line(result)


def test_an_unknown_table_names_the_options_to_check(workspace: VectorSearchEmulator) -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    deploy_commands.register(app)
    args = ["vector-search", "create-index", "--table", "main.docs.nope", "--endpoint", "vs"]
    result = CliRunner().invoke(app, [*args, "--index", "main.docs.x", "--embeddings", "hashing"])

    assert result.exit_code == 1
    line = _error_line(result)
    assert "Table main.docs.nope does not exist" in line
    assert "Check --endpoint 'vs' and --table 'main.docs.nope'" in line


def test_a_bad_pipeline_type_is_refused(workspace: VectorSearchEmulator) -> None:
    result = _create("--embeddings", "hashing", "--pipeline-type", "hourly")

    assert result.exit_code == 1
    assert "use TRIGGERED or CONTINUOUS" in _error_line(result)
