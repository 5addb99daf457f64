import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragworks import __version__
from ragworks.cli import app

runner = CliRunner()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("Violins have four strings tuned in fifths.")
    (tmp_path / "docs" / "b.md").write_text("Volcanoes erupt when magma pressure breaks the crust.")
    return tmp_path / "docs"


def test_version_and_help() -> None:
    assert runner.invoke(app, ["--version"]).output.strip() == f"ragworks {__version__}"
    for args in (["-h"], ["ingest", "-h"], ["search", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_ingest_then_search_json(docs: Path, tmp_path: Path) -> None:
    index = str(tmp_path / "idx")
    result = runner.invoke(app, ["ingest", str(docs), "--index", index, "--embeddings", "hashing"])
    assert result.exit_code == 0, result.output
    assert "embeddings hashing" in result.output and "2 added" in result.output
    result = runner.invoke(app, ["search", "magma crust", "--index", index, "-k", "1", "--json"])
    rows = json.loads(result.output)
    assert len(rows) == 1
    assert set(rows[0]) == {"id", "score", "text", "metadata"}
    assert rows[0]["metadata"]["source"].endswith("b.md")
    filtered = runner.invoke(
        app, ["search", "magma", "--index", index, "--json", "--filter", f"source={docs.as_posix()}/a.md"]
    )
    assert all(r["metadata"]["source"].endswith("a.md") for r in json.loads(filtered.output))


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", "x", "--index", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "No index at" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing"), "--index", str(tmp_path / "i")])
    assert result.exit_code == 1 and "No such file or folder" in result.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "search", "x", "--index", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "Traceback" in result.output


def test_search_with_a_config_reads_its_index_from_the_config_folder(
    docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    args = ["ingest", str(docs), "--index", str(project / "idx"), "--embeddings", "none"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (project / "agent.yaml").write_text("retriever:\n  index: idx\n  mode: bm25\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = runner.invoke(app, ["search", "magma", "--config", "../project/agent.yaml", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["metadata"]["source"].endswith("b.md")
