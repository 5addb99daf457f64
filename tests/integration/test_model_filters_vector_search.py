"""Model-chosen filters on Databricks Vector Search: the real client against the local REST emulator gets
the model's filter in `filters_json`, and only matching chunks come back to the model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage

from ragworks.agents.graphs import build_tool_agent
from ragworks.config import FilterableField
from ragworks.retrieval import LocalIndex, get_retriever
from ragworks.retrieval.local import Chunk
from ragworks.testing import ScriptedChatModel
from ragworks.testing.emulators.vector_search import VectorSearchEmulator
from ragworks.tools.retriever_tool import make_retriever_tool

INDEX = "main.docs.filtered"
TOKEN = "dapi-test-filters-0123"
CHUNKS = [
    Chunk(id="g1", text="Agents are logged by log_agent.", metadata={"source": "guide.md", "year": 2023}),
    Chunk(id="f1", text="Agents are logged from code.", metadata={"source": "faq.md", "year": 2024}),
    Chunk(id="n1", text="Logged agents keep their config.", metadata={"source": "notes.md", "year": 2021}),
]
FIELDS = {
    "source": FilterableField(values=["guide.md", "faq.md", "notes.md"]),
    "year": FilterableField(type="int"),
}


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[VectorSearchEmulator]:
    index = LocalIndex(embeddings="hashing")
    index.upsert(CHUNKS)
    for name in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    with VectorSearchEmulator({INDEX: index}, token=TOKEN) as vs:
        monkeypatch.setenv("DATABRICKS_HOST", vs.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
        yield vs


def _run(args: dict[str, Any]) -> tuple[ToolMessage, dict[str, Any]]:
    retriever = get_retriever(
        {"type": "databricks-vector-search", "index": INDEX, "k": 3, "options": {"columns": ["year"]}}
    )
    call = {"name": "search_documents", "args": args, "id": "c1"}
    model = ScriptedChatModel(responses=[AIMessage("", tool_calls=[call]), "Done [1]."])
    state = build_tool_agent(model, [make_retriever_tool(retriever, filterable=FIELDS)]).invoke(
        {"messages": [("user", "How are agents logged?")]}
    )
    return next(m for m in state["messages"] if isinstance(m, ToolMessage)), state


def _filters_sent(workspace: VectorSearchEmulator) -> list[object]:
    queries = [r for r in workspace.requests if r.path.endswith("/query")]
    return [json.loads(str(r.body.get("filters_json") or "null")) for r in queries]


def test_the_model_filter_reaches_vector_search(workspace: VectorSearchEmulator) -> None:
    message, state = _run({"query": "agents logged", "source": ["faq.md", "guide.md"], "year_min": 2024})
    assert message.status != "error"
    assert [d.id for d in state["documents"]] == ["f1"]
    assert _filters_sent(workspace) == [{"source": ["faq.md", "guide.md"], "year >=": 2024}]


def test_a_bad_filter_sends_no_query(workspace: VectorSearchEmulator) -> None:
    message, _ = _run({"query": "agents logged", "source": "readme.md"})
    assert message.status == "error" and "Allowed values: guide.md, faq.md, notes.md" in str(message.content)
    assert _filters_sent(workspace) == []
