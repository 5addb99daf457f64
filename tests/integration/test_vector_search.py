"""The databricks-vector-search retriever: the official client against the local REST emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from langchain_core.retrievers import BaseRetriever

from ragworks.embeddings import get_embedder
from ragworks.errors import ConfigError, RetrievalError
from ragworks.retrieval import LocalIndex, get_retriever
from ragworks.retrieval.local import Chunk
from ragworks.testing.contracts import CONTRACT_CORPUS, RetrieverContract
from ragworks.testing.emulators.vector_search import VectorSearchEmulator

INDEX = "main.docs.contract"
TOKEN = "dapi-test-secret-0123"
_AUTH_ENV = (
    "DATABRICKS_HOST",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_CONFIG_PROFILE",
    "DATABRICKS_AUTH_TYPE",
)


VECTORS = "main.docs.vectors"
"""The same chunks, described as an index of precomputed (hashing) vectors."""


@pytest.fixture(scope="module")
def emulator() -> Iterator[VectorSearchEmulator]:
    index = LocalIndex(embeddings="hashing")
    index.upsert(CONTRACT_CORPUS)
    with VectorSearchEmulator({INDEX: index, VECTORS: index}, token=TOKEN, self_managed=[VECTORS]) as vs:
        yield vs


@pytest.fixture
def workspace(
    emulator: VectorSearchEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> VectorSearchEmulator:
    """DATABRICKS_HOST/TOKEN point at the emulator; no profile file or other auth is picked up."""
    for name in _AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    monkeypatch.setenv("DATABRICKS_HOST", emulator.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    emulator.requests.clear()
    return emulator


def _retriever(**config: object) -> BaseRetriever:
    return get_retriever({"type": "databricks-vector-search", "index": INDEX, "k": 3, **config})


class TestVectorSearchHybrid(RetrieverContract):
    @pytest.fixture
    def retriever(self, workspace: VectorSearchEmulator) -> BaseRetriever:
        return _retriever()


class TestVectorSearchFullText(RetrieverContract):
    @pytest.fixture
    def retriever(self, workspace: VectorSearchEmulator) -> BaseRetriever:
        return _retriever(mode="bm25")


def _queries(vs: VectorSearchEmulator) -> list[dict[str, object]]:
    return [r.body for r in vs.requests if r.path.endswith("/query")]


class TestVectorSearchPrecomputedVectors(RetrieverContract):
    @pytest.fixture
    def retriever(self, workspace: VectorSearchEmulator) -> BaseRetriever:
        return _retriever(index=VECTORS, options={"embeddings": "hashing", "text_column": "text"})


def test_precomputed_vectors_are_embedded_here_and_sent(workspace: VectorSearchEmulator) -> None:
    options = {"embeddings": "hashing", "text_column": "text"}
    dense = _retriever(index=VECTORS, mode="dense", options=options)
    assert dense.invoke("wild yeast starter")[0].id == "sourdough"
    hybrid = _retriever(index=VECTORS, options=options)
    assert hybrid.invoke("violin strings")[0].id == "violin"
    ann, both = _queries(workspace)
    assert len(ann["query_vector"]) == len(both["query_vector"]) > 1  # type: ignore[arg-type]
    assert "query_text" not in ann and both["query_text"] == "violin strings"
    with pytest.raises(ConfigError, match=r"options\.embeddings"):
        _retriever(index=VECTORS).invoke("violin")


def test_query_carries_mode_columns_filters_and_k(workspace: VectorSearchEmulator) -> None:
    retriever = _retriever(mode="dense", k=2, filters={"year >=": 2020}, options={"columns": ["year"]})
    docs = retriever.invoke("strings containers magma")
    assert 1 <= len(docs) <= 2
    assert all(d.metadata["year"] >= 2020 for d in docs)
    (query,) = _queries(workspace)
    assert query["query_type"] == "ANN"
    assert query["num_results"] == 2
    assert query["columns"] == ["id", "text", "source", "year"]
    assert json.loads(str(query["filters_json"])) == {"year >=": 2020}


def test_score_threshold_drops_weak_results(workspace: VectorSearchEmulator) -> None:
    everything = _retriever(k=5).invoke("violin strings")
    cut = (everything[0].metadata["score"] + everything[-1].metadata["score"]) / 2
    kept = _retriever(k=5, options={"score_threshold": cut}).invoke("violin strings")
    assert kept and len(kept) < len(everything)
    assert all(d.metadata["score"] >= cut for d in kept)
    assert _queries(workspace)[-1]["score_threshold"] == cut


def test_index_is_looked_up_once(workspace: VectorSearchEmulator) -> None:
    retriever = _retriever()
    retriever.invoke("tomato")
    retriever.invoke("violin")
    lookups = [r for r in workspace.requests if r.path.startswith("/api/") and not r.path.endswith("/query")]
    assert len(_queries(workspace)) == 2
    assert 1 <= len(lookups) <= 2  # the client's get_index, then describe: once per retriever


def test_unavailable_service_is_retried_by_the_client(workspace: VectorSearchEmulator) -> None:
    retriever = _retriever()
    retriever.invoke("warm up")  # the index lookup happens here, so the failure lands on a query
    workspace.fail_next(503)
    assert retriever.invoke("volcano magma")[0].id == "volcano"
    assert len(_queries(workspace)) == 3


def test_server_error_is_a_retrieval_error_without_the_token(workspace: VectorSearchEmulator) -> None:
    retriever = _retriever()
    retriever.invoke("warm up")
    workspace.fail_next(500)
    with pytest.raises(RetrievalError, match=INDEX) as info:
        retriever.invoke("volcano")
    assert info.value.backend == "databricks-vector-search"
    assert TOKEN not in str(info.value)


def test_wrong_token_says_to_check_it(
    workspace: VectorSearchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    with pytest.raises(ConfigError, match="DATABRICKS_TOKEN") as info:
        _retriever().invoke("volcano")
    assert "dapi-wrong" not in str(info.value)


def test_unknown_index_says_which_setting_to_check(workspace: VectorSearchEmulator) -> None:
    with pytest.raises(ConfigError, match=r"'main\.docs\.missing' was not found.*retriever\.index"):
        get_retriever({"type": "databricks-vector-search", "index": "main.docs.missing"}).invoke("x")


def test_unknown_column_or_filter_field_is_a_config_error(workspace: VectorSearchEmulator) -> None:
    with pytest.raises(ConfigError, match="not present in index: colour"):
        _retriever(options={"columns": ["colour"]}).invoke("tomato")
    with pytest.raises(ConfigError, match=r"rejected the query.*colour"):
        _retriever(filters={"colour": "red"}).invoke("tomato")


def test_missing_credentials_and_unknown_options_are_config_errors(
    workspace: VectorSearchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="Unknown databricks-vector-search option"):
        _retriever(options={"colums": ["year"]})
    monkeypatch.delenv("DATABRICKS_HOST")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    with pytest.raises(ConfigError, match="DATABRICKS_HOST"):
        _retriever().invoke("tomato")
    assert workspace.requests == []


def test_agent_answers_from_the_vector_search_index(workspace: VectorSearchEmulator) -> None:
    from ragworks.agents import build_agent

    agent = build_agent({"retriever": {"type": "databricks-vector-search", "index": INDEX, "k": 3}})
    response = agent.predict({"input": [{"role": "user", "content": "How does sourdough bread rise?"}]})
    assert response.custom_outputs is not None
    sources = [s["source"] for s in response.custom_outputs["sources"]]
    assert "kitchen.md" in sources
    assert "starter" in json.dumps(response.model_dump()["output"])


def test_logged_agent_declares_the_index_and_answers_from_it(
    workspace: VectorSearchEmulator, tmp_path: Path
) -> None:
    import mlflow

    saved_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        _log_and_load(workspace)
    finally:
        mlflow.set_tracking_uri(saved_uri)


def _log_and_load(workspace: VectorSearchEmulator) -> None:
    import mlflow

    from ragworks.agents.logged_model import INDEX_ARTIFACT, log_agent

    retriever = {
        "type": "databricks-vector-search",
        "index": INDEX,
        "endpoint": workspace.endpoint,
        "k": 3,
        "options": {"embedding_endpoint": "databricks-gte-large-en"},
    }
    info = log_agent({"retriever": retriever}, name="agent")
    flavor = info.flavors["python_function"]
    assert INDEX_ARTIFACT not in (flavor.get("artifacts") or {})  # nothing local to ship
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    resources = json.dumps(yaml.safe_load((local / "MLmodel").read_text())["resources"])
    assert INDEX in resources and "databricks-gte-large-en" in resources
    assert "databricks-vectorsearch" in (local / "requirements.txt").read_text()

    workspace.requests.clear()
    model = mlflow.pyfunc.load_model(info.model_uri)
    response = model.predict({"input": [{"role": "user", "content": "What do volcanoes do?"}]})
    assert response["custom_outputs"]["sources"][0]["source"] == "geology.md"
    assert _queries(workspace)  # answered from the emulated index, not a copy


def test_emulated_index_takes_upserts_and_deletes_from_the_client(workspace: VectorSearchEmulator) -> None:
    from databricks.ai_search.client import AISearchClient

    local = LocalIndex(embeddings="hashing")
    local.upsert(CONTRACT_CORPUS[:2])
    with VectorSearchEmulator({"main.docs.live": local}, token=TOKEN) as vs:
        client = AISearchClient(workspace_url=vs.host, personal_access_token=TOKEN, disable_notice=True)
        index = client.get_index(index_name="main.docs.live")
        harp = {"id": "harp", "text": "A harp has many strings plucked by hand.", "source": "harp.md"}
        index.upsert([harp])
        found = index.similarity_search(query_text="harp strings", columns=["id", "source"], num_results=1)
        assert found["result"]["data_array"][0][:2] == ["harp", "harp.md"]
        index.delete(["harp"])
        assert "harp" not in local


def test_cli_searches_with_the_configured_retriever(workspace: VectorSearchEmulator, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragworks.cli import app
    from ragworks.config import AgentConfig

    config = tmp_path / "agent.yaml"
    AgentConfig.load({"retriever": {"type": "databricks-vector-search", "index": INDEX}}).to_yaml(config)
    runner = CliRunner()
    result = runner.invoke(app, ["search", "magma crust", "--config", str(config), "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["id"] == "volcano" and rows[0]["metadata"]["source"] == "geology.md"
    assert len(rows) == 2
    assert _queries(workspace)[-1]["query_type"] == "HYBRID"
    filtered = runner.invoke(
        app, ["search", "magma violin", "--config", str(config), "--mode", "bm25", "-f", "source=music.md"]
    )
    assert filtered.exit_code == 0 and "music.md" in filtered.output and "geology.md" not in filtered.output
    assert _queries(workspace)[-1]["query_type"] == "FULL_TEXT"
    bad = runner.invoke(app, ["search", "magma", "--config", str(config), "--mode", "fuzzy"])
    assert bad.exit_code == 1 and "mode" in bad.output


@pytest.fixture
def writable(
    workspace: VectorSearchEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[VectorSearchEmulator, LocalIndex]]:
    """A fresh emulated workspace (DATABRICKS_HOST points at it) with writable indexes; their seed
    chunk gives them the source, chunk_index and file_hash columns."""
    local = LocalIndex(embeddings="hashing")
    seed = {"source": "seed.md", "chunk_index": 0, "file_hash": "0" * 64}  # the columns ingest writes
    local.upsert([Chunk(id="seed", text="A seed row.", metadata=seed)])
    with VectorSearchEmulator({"main.docs.ingest": local, "main.docs.vecs": local}, token=TOKEN) as vs:
        vs.self_managed = {"main.docs.vecs"}
        monkeypatch.setenv("DATABRICKS_HOST", vs.host)
        yield vs, local


def test_ingest_writes_new_files_replaces_changed_ones_and_skips_the_rest(
    writable: tuple[VectorSearchEmulator, LocalIndex], tmp_path: Path
) -> None:
    from ragworks.retrieval.vector_search_ingest import ingest_to_vector_search

    vs, local = writable
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "harp.md").write_text("A harp has many strings plucked by hand.\n")
    (docs / "drum.md").write_text("A drum is struck with sticks or hands.\n")
    (docs / "blob.bin").write_bytes(b"\x00\x01")
    first = ingest_to_vector_search([docs], "main.docs.ingest", chunk_size=200, chunk_overlap=20)
    assert sorted(first.added) == [f"{docs.as_posix()}/drum.md", f"{docs.as_posix()}/harp.md"]
    assert len(first.skipped) == 1 and first.chunks_total == len(local) == 3
    harp = next(c for c in local.chunks() if c.metadata["source"].endswith("harp.md"))
    assert harp.text.startswith("A harp") and harp.metadata["chunk_index"] == 0

    vs.requests.clear()
    again = ingest_to_vector_search([docs], "main.docs.ingest", chunk_size=200, chunk_overlap=20)
    assert len(again.unchanged) == 2 and not again.changed
    assert not [r for r in vs.requests if r.path.endswith(("-data",))]  # nothing written

    (docs / "drum.md").write_text("A drum is a percussion instrument.\n")
    changed = ingest_to_vector_search([docs], "main.docs.ingest", chunk_size=200, chunk_overlap=20)
    assert changed.replaced == [f"{docs.as_posix()}/drum.md"] and len(local) == 3
    assert "percussion" in local.search("percussion", k=1, mode="bm25")[0].page_content


def test_ingest_embeds_chunks_for_an_index_of_precomputed_vectors(
    writable: tuple[VectorSearchEmulator, LocalIndex], tmp_path: Path
) -> None:
    from ragworks.retrieval.vector_search_ingest import ingest_to_vector_search

    vs, _ = writable
    (tmp_path / "harp.md").write_text("A harp has many strings.\n")
    with pytest.raises(ConfigError, match="--embeddings"):
        ingest_to_vector_search([tmp_path], "main.docs.vecs")
    ingest_to_vector_search([tmp_path], "main.docs.vecs", embeddings="hashing")
    (upsert,) = [r.body for r in vs.requests if r.path.endswith("/upsert-data")]
    (row,) = json.loads(str(upsert["inputs_json"]))
    expected = get_embedder("hashing").encode([row["text"]])[0]  # type: ignore[union-attr]
    assert row["embedding"] == pytest.approx([float(x) for x in expected])
    assert row["source"].endswith("harp.md")


def test_ingest_retries_a_rate_limited_write_and_keeps_old_chunks_until_new_ones_land(
    writable: tuple[VectorSearchEmulator, LocalIndex], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.retrieval import vector_search
    from ragworks.retrieval.vector_search_ingest import ingest_to_vector_search

    vs, local = writable
    monkeypatch.setattr(vector_search, "BACKOFF_S", 0.01)
    (tmp_path / "harp.md").write_text("A harp has many strings.\n")
    vs.fail_next(503, path_suffix="/upsert-data")  # the client itself does not retry a POST
    report = ingest_to_vector_search([tmp_path], "main.docs.ingest")
    assert report.added and len([r for r in vs.requests if r.path.endswith("/upsert-data")]) == 2

    (tmp_path / "harp.md").write_text("A harp is plucked.\n")
    vs.fail_next(500, path_suffix="/upsert-data")
    with pytest.raises(RetrievalError, match="upsert failed"):
        ingest_to_vector_search([tmp_path], "main.docs.ingest")
    assert any("many strings" in c.text for c in local.chunks())  # the old chunk is still there


def test_ingest_cli_and_an_index_without_a_source_column(
    writable: tuple[VectorSearchEmulator, LocalIndex], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from ragworks.cli import app

    vs, _ = writable
    (tmp_path / "harp.md").write_text("A harp has many strings.\n")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--vector-search", "main.docs.ingest"])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "main.docs.ingest" in result.output
    vs.indexes["main.docs.bare"] = LocalIndex(embeddings="hashing")  # only id and text columns
    bare = CliRunner().invoke(app, ["ingest", str(tmp_path), "--vector-search", "main.docs.bare"])
    assert bare.exit_code == 1 and "no column 'source'" in bare.output


def test_errors_of_older_clients_are_explained_from_their_message() -> None:
    from ragworks.retrieval.vector_search import explain_failure

    old_style = Exception('Response content b\'{"error_code":"NOT_FOUND"}\', status_code 404')
    assert isinstance(explain_failure(old_style, INDEX, action="query"), ConfigError)
    error = explain_failure(Exception("status_code 503"), INDEX, action="upsert", setting="--vector-search")
    assert isinstance(error, RetrievalError) and "upsert failed" in str(error)
    missing = explain_failure(Exception("status_code 404"), INDEX, action="scan", setting="--vector-search")
    assert "Check --vector-search" in str(missing)


def test_a_rerun_after_a_half_failed_ingest_leaves_no_old_chunks(
    writable: tuple[VectorSearchEmulator, LocalIndex], tmp_path: Path
) -> None:
    from ragworks.retrieval.vector_search_ingest import ingest_to_vector_search

    vs, local = writable
    harp = tmp_path / "harp.md"
    harp.write_text("A harp has many strings.\n")
    ingest_to_vector_search([tmp_path], "main.docs.ingest")
    assert ingest_to_vector_search([tmp_path], "main.docs.ingest").unchanged  # by its file hash

    harp.write_text("A harp is plucked.\n")
    vs.fail_next(500, path_suffix="/delete-data")  # the new chunk lands, the old one stays
    with pytest.raises(RetrievalError, match="delete failed"):
        ingest_to_vector_search([tmp_path], "main.docs.ingest")
    rerun = ingest_to_vector_search([tmp_path], "main.docs.ingest")
    assert rerun.replaced == [harp.as_posix()]
    texts = [c.text for c in local.chunks() if c.metadata["source"] == harp.as_posix()]
    assert texts == ["A harp is plucked."]


def test_a_write_that_reports_failed_keys_is_an_error(
    writable: tuple[VectorSearchEmulator, LocalIndex], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.retrieval.vector_search_ingest import ingest_to_vector_search

    vs, _ = writable
    (tmp_path / "harp.md").write_text("A harp has many strings.\n")
    monkeypatch.setattr(vs, "reject", lambda row: "harp" in row["text"])
    with pytest.raises(RetrievalError, match=r"reported PARTIAL_SUCCESS; failed keys: [0-9a-f]{32}"):
        ingest_to_vector_search([tmp_path], "main.docs.ingest")


def test_an_expiring_login_reopens_the_index(
    workspace: VectorSearchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.retrieval import vector_search

    real = vector_search._credentials
    monkeypatch.setattr(vector_search, "_credentials", lambda url: (real(url)[0], False))  # not a PAT
    monkeypatch.setattr(vector_search, "TOKEN_TTL_S", 0.0)
    retriever = _retriever()
    retriever.invoke("violin")
    opened = [r for r in workspace.requests if r.path == f"/api/2.0/vector-search/indexes/{INDEX}"]
    retriever.invoke("violin")  # past the token's lifetime: opened again
    again = [r for r in workspace.requests if r.path == f"/api/2.0/vector-search/indexes/{INDEX}"]
    assert len(again) > len(opened)

    monkeypatch.setattr(vector_search, "TOKEN_TTL_S", 3600.0)
    retriever.invoke("violin")
    monkeypatch.setattr(workspace, "token", "dapi-rotated")  # the old token is refused from now on
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-rotated")
    assert retriever.invoke("violin")[0].id == "violin"  # a 401, then a fresh login and one retry


def test_a_delta_sync_index_names_its_columns_in_columns_to_sync() -> None:
    from ragworks.retrieval.vector_search import IndexSpec, VectorSearchRetriever, _Layout

    retriever = VectorSearchRetriever(index_name=INDEX)
    spec = {"embedding_source_columns": [{"name": "body"}], "columns_to_sync": ["id", "body", "doc_uri"]}
    description = {"primary_key": "id", "delta_sync_index_spec": spec}
    layout = _Layout.of(IndexSpec.parse(description, INDEX), retriever)
    assert (layout.text, layout.source, layout.columns) == ("body", "doc_uri", ["id", "body", "doc_uri"])
    del spec["columns_to_sync"]  # every column synced: the primary key stands in for the source
    assert _Layout.of(IndexSpec.parse(description, INDEX), retriever).source is None
