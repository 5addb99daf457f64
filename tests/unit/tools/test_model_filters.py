"""Model-chosen metadata filters: the retriever tool's schema shows the declared fields and their allowed
values, a valid filter returns only matching chunks, and a bad one is an error to the model, no search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from ragworks.agents import builder
from ragworks.agents.builder import build_agent
from ragworks.agents.graphs import build_tool_agent
from ragworks.config import FilterableField, RetrieverConfig
from ragworks.errors import ConfigError
from ragworks.retrieval.local import Chunk, LocalIndex, LocalRetriever
from ragworks.testing import ScriptedChatModel
from ragworks.tools.model_filters import check_filterable, to_filters
from ragworks.tools.retriever_tool import make_retriever_tool

FIELDS = {
    "source": FilterableField(values=["guide.md", "faq.md", "notes.md"], description="The file"),
    "year": FilterableField(type="int"),
}
CHUNKS = [
    Chunk(id="g1", text="Agents are logged with log_agent.", metadata={"source": "guide.md", "year": 2023}),
    Chunk(id="f1", text="Agents are logged from code.", metadata={"source": "faq.md", "year": 2024}),
    Chunk(id="n1", text="Logged agents keep their config.", metadata={"source": "notes.md", "year": 2021}),
]


class CountingRetriever(BaseRetriever):
    """A real local retriever that counts its searches."""

    base: BaseRetriever
    calls: list[dict[str, Any]] = Field(default_factory=list)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        self.calls.append({"query": query, **kwargs})
        return self.base.invoke(query, **kwargs)


@pytest.fixture
def retriever() -> CountingRetriever:
    index = LocalIndex(embeddings="hashing")
    index.upsert(CHUNKS)
    return CountingRetriever(base=LocalRetriever(index=index, k=3, mode="bm25"))


def _run(
    retriever: BaseRetriever, args: dict[str, Any]
) -> tuple[ToolMessage, ScriptedChatModel, dict[str, Any]]:
    call = {"name": "search_documents", "args": args, "id": "c1", "type": "tool_call"}
    model = ScriptedChatModel(responses=[AIMessage("", tool_calls=[call]), "Done [1]."])
    graph = build_tool_agent(model, [make_retriever_tool(retriever, filterable=FIELDS)])
    state = graph.invoke({"messages": [("user", "How are agents logged?")]})
    tool_message = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    return tool_message, model, state


def test_the_schema_shows_each_field_with_its_allowed_values(retriever: CountingRetriever) -> None:
    parameters = convert_to_openai_tool(make_retriever_tool(retriever, filterable=FIELDS))["function"]
    props = parameters["parameters"]["properties"]
    assert set(props) == {"query", "source", "year", "year_min", "year_max"}
    assert parameters["parameters"]["required"] == ["query"]
    one, many = props["source"]["anyOf"]
    assert one == {"type": "string", "enum": ["guide.md", "faq.md", "notes.md"]}
    assert many == {"type": "array", "items": one}
    assert "The file" in props["source"]["description"]
    assert props["year_min"]["type"] == "integer"
    assert "source (string: guide.md, faq.md, notes.md)" in parameters["description"]


def test_a_tool_without_filterable_fields_keeps_the_query_only(retriever: CountingRetriever) -> None:
    assert set(make_retriever_tool(retriever).args) == {"query"}


def test_a_valid_filter_returns_only_matching_chunks(retriever: CountingRetriever) -> None:
    message, model, state = _run(retriever, {"query": "agents logged", "source": ["faq.md", "notes.md"]})
    assert message.status != "error"
    assert {d.metadata["source"] for d in state["documents"]} == {"faq.md", "notes.md"}
    assert "guide.md" not in str(message.content) and "faq.md" in str(message.content)
    assert retriever.calls == [{"query": "agents logged", "filters": {"source": ["faq.md", "notes.md"]}}]
    assert model.bound_tools == ["search_documents"]


def test_a_numeric_bound_filters_by_range(retriever: CountingRetriever) -> None:
    _, _, state = _run(retriever, {"query": "agents logged", "year_min": 2023, "year_max": 2023.0})
    assert [d.id for d in state["documents"]] == ["g1"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"source": "readme.md"}, "Allowed values: guide.md, faq.md, notes.md"),
        ({"year": "2023"}, "filter 'year' takes an integer (or a list of them); got '2023'"),
        ({"year_min": True}, "filter 'year_min' takes an integer; got True"),
        ({"lang": "en"}, "'lang' is not a filter of this search. Filters: source (string: guide.md"),
    ],
)
def test_an_invalid_filter_is_an_error_for_the_model_and_runs_no_search(
    retriever: CountingRetriever, args: dict[str, Any], says: str
) -> None:
    message, model, state = _run(retriever, {"query": "agents logged", **args})
    assert message.status == "error"
    assert says in str(message.content)
    assert retriever.calls == []
    assert state.get("documents", []) == []
    assert model.history[1][-1] == message  # the model saw the error on its next call


def test_to_filters_maps_arguments_to_the_filter_dict() -> None:
    assert to_filters(FIELDS, {"query": "q", "source": "faq.md", "year": 2024.0, "year_max": None}) == {
        "source": "faq.md",
        "year": 2024,
    }


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"type": "langchain:x:y", "filterable": {"a": {}}}, "takes filters per query"),
        ({"filters": {"year >=": 2020}, "filterable": {"year": {"type": "int"}}}, "also fixed"),
        ({"filterable": {"year": {"type": "int", "values": ["new"]}}}, "'new' is not an integer"),
        ({"filterable": {"year": {"type": "int"}, "year_min": {}}}, "year_min would be defined twice"),
        ({"filterable": {"query": {}}}, "query would be defined twice"),
    ],
)
def test_bad_declarations_are_config_errors(config: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_filterable(RetrieverConfig.model_validate(config))


def test_a_config_gives_the_built_agent_the_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = LocalIndex(embeddings="hashing")
    index.upsert(CHUNKS)
    index.save(tmp_path / "index")
    call = {"name": "search_documents", "args": {"query": "agents", "source": "notes.md"}, "id": "c1"}
    model = ScriptedChatModel(responses=[AIMessage("", tool_calls=[call]), "Kept [1]."])
    monkeypatch.setattr(builder, "get_chat_model", lambda *a, **k: model)
    config = {
        "agent": "tool-calling",
        "retriever": {"index": str(tmp_path / "index"), "mode": "bm25", "filterable": {"source": {}}},
    }
    response = build_agent(config).predict({"input": [{"role": "user", "content": "How are agents logged?"}]})
    assert [s["source"] for s in response.custom_outputs["sources"]] == ["notes.md"]
