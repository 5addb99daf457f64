import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner

from ragworks.agents.commands import format_sources, register, ui_hint
from ragworks.agents.logged_model import databricks_resources, needed_extras, pinned_requirements
from ragworks.config import AgentConfig
from ragworks.errors import ConfigError
from ragworks.retrieval.ingest import ingest

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a callback keeps typer in multi-command mode
        pass

    register(app)
    return app


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chat")
    docs = root / "docs"
    docs.mkdir()
    (docs / "violins.md").write_text("Violins have four strings tuned in perfect fifths: G, D, A and E.")
    (docs / "volcanoes.md").write_text("Volcanoes erupt when the pressure of magma breaks the crust.")
    ingest([docs], root / "index", embeddings="hashing")
    return root / "index"


def test_chat_one_shot_streams_the_answer_and_prints_sources(app: typer.Typer, index: Path) -> None:
    result = runner.invoke(app, ["chat", "How are violin strings tuned?", "--index", str(index)])
    assert result.exit_code == 0, result.output
    answer, _, sources = result.output.partition("Sources:")
    assert "fifths" in answer
    assert "violins.md" in sources


def test_chat_repl_keeps_the_conversation(app: typer.Typer, index: Path) -> None:
    lines = "What makes volcanoes erupt?\n/reset\nHow are violins tuned?\n\n"
    result = runner.invoke(app, ["chat", "--index", str(index)], input=lines)
    assert result.exit_code == 0, result.output
    assert result.output.count("Sources:") == 2
    assert "magma" in result.output and "fifths" in result.output
    assert "(conversation cleared)" in result.output


def test_chat_without_an_index_fails_with_a_hint(app: typer.Typer, tmp_path: Path) -> None:
    result = runner.invoke(app, ["chat", "hi", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "Error:" in result.output


def test_log_model_without_an_index_says_how_to_build_one(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = runner.invoke(app, ["log-model", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "ragworks ingest" in result.output


def test_resources_follow_the_config() -> None:
    assert databricks_resources(AgentConfig()) == []
    cfg = AgentConfig(
        llm="databricks:llama-endpoint",
        retriever={
            "type": "databricks-vector-search",
            "index": "main.docs.chunks_index",
            "endpoint": "vs-endpoint",
            "options": {"embedding_endpoint": "bge-endpoint"},
        },
    )
    found = {(type(r).__name__, r.name) for r in databricks_resources(cfg)}
    assert found == {
        ("DatabricksVectorSearchIndex", "main.docs.chunks_index"),
        ("DatabricksServingEndpoint", "llama-endpoint"),
        ("DatabricksServingEndpoint", "bge-endpoint"),
    }
    assert needed_extras(cfg) == {"databricks"}


def test_unity_catalog_tools_declare_functions_and_warehouse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", "wh-123")
    cfg = AgentConfig(llm="offline:lexical", agent="tool-calling", tools=["uc:main.fx.convert", "json:dumps"])
    found = {(type(r).__name__, r.name) for r in databricks_resources(cfg)}
    assert found == {("DatabricksFunction", "main.fx.convert"), ("DatabricksSQLWarehouse", "wh-123")}
    assert needed_extras(cfg) == {"databricks"}
    assert databricks_resources(AgentConfig(tools=["uc:main.fx.convert"])) == []  # a rag agent calls no tools


def test_requirements_are_pinned(index: Path) -> None:
    cfg = AgentConfig(llm="offline:lexical", retriever={"type": "local", "index": str(index)})
    reqs = pinned_requirements(cfg)
    names = {r.split("==")[0].split(">")[0].lower() for r in reqs}
    assert {"mlflow", "langgraph", "bm25s", "langchain-core"} <= names
    assert "torch" not in names  # a hashing index and a lexical offline model need no dense extra
    minilm = pinned_requirements(cfg.model_copy(update={"llm": "offline:minilm"}))
    assert "torch" in {r.split("==")[0].split(">")[0].lower() for r in minilm}
    assert all("==" in r for r in reqs if r.split("==")[0] in {"mlflow", "langgraph"})


def test_remote_retrievers_refuse_an_index_option(tmp_path: Path) -> None:
    from ragworks.agents.logged_model import log_agent

    cfg = {"retriever": {"type": "databricks-vector-search", "index": "main.docs.idx"}}
    with pytest.raises(ConfigError, match=r"retriever\.type"):
        log_agent(cfg, index_path=tmp_path)


def test_format_sources_and_ui_hint() -> None:
    sources = [{"n": 1, "source": "a.md", "cited": False}, {"n": 2, "source": "b.md", "cited": True}]
    assert format_sources(sources) == ["Sources:", "  [2] b.md"]
    assert format_sources([{"n": 1, "source": "a.md"}])[0].startswith("Retrieved")
    assert ui_hint("sqlite:///mlflow.db") == "mlflow ui --backend-store-uri sqlite:///mlflow.db"
    assert ui_hint("http://127.0.0.1:5000") == "open http://127.0.0.1:5000"


QUICKSTART = """
import typer
from ragworks.agents.commands import register

app = typer.Typer()


@app.callback()
def main() -> None:
    pass


register(app)
app()
"""


def test_quickstart_answers_logs_and_traces(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in {"MLFLOW_TRACKING_URI", "MLFLOW_TRACE_SAMPLING_RATIO"}
    }
    done = subprocess.run(
        [sys.executable, "-c", QUICKSTART, "quickstart", "--embeddings", "hashing"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("Sources:") == 3
    assert "Logged model models:/" in done.stdout
    assert "faithfulness" in done.stdout  # the example suite ran
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in done.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("ragworks-quickstart")
    traces = client.search_traces(locations=[experiment.experiment_id])
    assert len(traces) >= 3
    assert {"AGENT", "RETRIEVER", "CHAT_MODEL"} <= {s.span_type for s in traces[0].data.spans}


def test_log_model_logs_and_registers_a_loadable_model(app: typer.Typer, index: Path, tmp_path: Path) -> None:
    import mlflow

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    config = tmp_path / "agent.yaml"
    AgentConfig(retriever={"type": "local", "index": str(index), "k": 2}).to_yaml(config)
    args = ["log-model", "-c", str(config), "--index", str(index), "--name", "rag"]
    args += ["--registered-model-name", "violins"]
    original = mlflow.get_tracking_uri()
    try:
        result = runner.invoke(app, args, env={"MLFLOW_TRACKING_URI": tracking})
        assert result.exit_code == 0, result.output
        assert "Logged model models:/" in result.output and "Registered version 1" in result.output
        mlflow.set_tracking_uri(tracking)
        model = mlflow.pyfunc.load_model("models:/violins/1")
        answer = model.predict({"input": [{"role": "user", "content": "How many strings has a violin?"}]})
        assert "four strings" in answer["output"][-1]["content"][0]["text"]
    finally:
        mlflow.set_tracking_uri(original)
