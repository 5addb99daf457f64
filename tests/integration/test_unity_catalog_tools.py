"""Unity Catalog functions as tools: databricks-sdk against the local Unity Catalog + SQL emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from ragworks.errors import ConfigError, ToolError
from ragworks.testing import ScriptedChatModel
from ragworks.testing.emulators.unity_catalog import UnityCatalogEmulator
from ragworks.tools import load_tools

TOKEN = "dapi-uc-secret-42"
WAREHOUSE = "wh-emulated"


def convert_currency(
    amount: Annotated[float, "The amount in the source currency"],
    rate: Annotated[float, "Units of the target currency per source unit"] = 2.0,
) -> float:
    """Convert an amount of money at an exchange rate."""
    return amount * rate


def recent_orders(customer: str) -> list[dict[str, object]]:
    """A customer's recent orders."""
    return [{"order": f"{customer}-1", "total": 12.5}, {"order": f"{customer}-2", "total": 3.0}]


def count_tags(tags: list[str]) -> int:
    """How many distinct tags there are."""
    return len(set(tags))


def strict_sqrt(x: float) -> float:
    """The square root of a non-negative number."""
    if x < 0:
        raise ValueError("x must not be negative")
    return float(x) ** 0.5


FUNCTIONS = {
    "main.tools.convert_currency": convert_currency,
    "main.tools.recent_orders": recent_orders,
    "main.tools.count_tags": count_tags,
    "main.tools.strict_sqrt": strict_sqrt,
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[UnityCatalogEmulator]:
    with UnityCatalogEmulator(FUNCTIONS, warehouse_id=WAREHOUSE, token=TOKEN) as uc:
        yield uc


@pytest.fixture
def workspace(
    emulator: UnityCatalogEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> UnityCatalogEmulator:
    for name in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    monkeypatch.setenv("DATABRICKS_HOST", emulator.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", WAREHOUSE)
    emulator.requests.clear()
    return emulator


def _statements(uc: UnityCatalogEmulator) -> list[dict[str, object]]:
    return [r.body for r in uc.requests if r.path.startswith("/api/2.0/sql/statements")]


def test_tool_is_described_by_the_function(workspace: UnityCatalogEmulator) -> None:
    (tool,) = load_tools(["uc:main.tools.convert_currency"])
    assert tool.name == "main__tools__convert_currency"
    assert tool.description == "Convert an amount of money at an exchange rate."
    schema = tool.get_input_schema().model_json_schema()
    assert schema["required"] == ["amount"]
    assert schema["properties"]["amount"]["description"] == "The amount in the source currency"
    assert "rate" in schema["properties"]


def test_call_sends_arguments_as_parameters_and_returns_the_value(workspace: UnityCatalogEmulator) -> None:
    (tool,) = load_tools(["uc:main.tools.convert_currency"])
    assert tool.invoke({"amount": 10, "rate": 3.5}) == "35.0"
    assert tool.invoke({"amount": 10}) == "20.0"  # the function's default rate
    first, second = _statements(workspace)
    assert first["statement"] == (
        "SELECT main.tools.convert_currency(amount => :amount, rate => :rate) AS result"
    )
    assert {"name": "amount", "value": "10.0", "type": "double"} in first["parameters"]  # type: ignore[operator]
    assert "rate" not in str(second["statement"])
    assert first["warehouse_id"] == WAREHOUSE


def test_table_functions_and_complex_arguments(workspace: UnityCatalogEmulator) -> None:
    orders, tags = load_tools(["uc:main.tools.recent_orders", "uc:main.tools.count_tags"])
    rows = json.loads(orders.invoke({"customer": "acme"}))
    assert rows == [{"order": "acme-1", "total": "12.5"}, {"order": "acme-2", "total": "3.0"}]
    assert tags.invoke({"tags": ["a", "b", "a"]}) == "2"
    statement = str(_statements(workspace)[-1]["statement"])
    assert "from_json(:tags, 'array<string>')" in statement


def test_a_failing_function_is_a_tool_error_for_the_model(workspace: UnityCatalogEmulator) -> None:
    (tool,) = load_tools(["uc:main.tools.strict_sqrt"])
    with pytest.raises(ToolError, match="strict_sqrt failed: ValueError: x must not be negative"):
        tool.invoke({"x": -4})


def test_configuration_mistakes_are_config_errors(
    workspace: UnityCatalogEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"'main\.tools\.missing' was not found"):
        load_tools(["uc:main.tools.missing"])
    with pytest.raises(ConfigError, match=r"uc:<catalog>\.<schema>\.<function>"):
        load_tools(["uc:just_a_name"])
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    with pytest.raises(ConfigError, match="DATABRICKS_TOKEN") as info:
        load_tools(["uc:main.tools.convert_currency"])
    assert "dapi-wrong" not in str(info.value)
    monkeypatch.delenv("DATABRICKS_WAREHOUSE_ID")
    with pytest.raises(ConfigError, match="DATABRICKS_WAREHOUSE_ID"):
        load_tools(["uc:main.tools.convert_currency"])


def test_a_wrong_warehouse_is_a_tool_error(
    workspace: UnityCatalogEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", "wh-gone")
    (tool,) = load_tools(["uc:main.tools.convert_currency"])
    with pytest.raises(ToolError, match="wh-gone not found"):
        tool.invoke({"amount": 1})


@pytest.mark.usefixtures("tracing_off")
def test_tool_calling_agent_calls_the_function(workspace: UnityCatalogEmulator, docs_index: str) -> None:
    from ragworks.agents.graphs import build_tool_agent
    from ragworks.retrieval import get_retriever
    from ragworks.tools import agent_tools

    retriever = get_retriever({"type": "local", "index": docs_index, "k": 2})
    tools = agent_tools(retriever, ["uc:main.tools.convert_currency"])
    call = {"name": "main__tools__convert_currency", "args": {"amount": 5}, "id": "c1"}
    model = ScriptedChatModel(responses=[AIMessage("", tool_calls=[call]), AIMessage("That is 10.0.")])
    state = build_tool_agent(model, tools).invoke({"messages": [HumanMessage("5 EUR in USD?")]})
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in results] == ["10.0"]
    assert state["messages"][-1].content == "That is 10.0."


@pytest.mark.parametrize("name", ["x) ; DROP TABLE t; --", "_x", "model_config"])
def test_parameters_that_would_be_written_into_sql_unsafely_are_refused(
    workspace: UnityCatalogEmulator, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    real = workspace.function_info

    def tampered(body: dict[str, object], *, full_name: str) -> dict[str, object]:
        info = real(body, full_name=full_name)
        info["input_params"]["parameters"][0]["name"] = name  # type: ignore[index]
        return info

    monkeypatch.setattr(workspace, "function_info", tampered)
    with pytest.raises(ConfigError, match="cannot call safely"):
        load_tools(["uc:main.tools.strict_sqrt"])
    assert not _statements(workspace)


def test_a_slow_statement_is_polled_and_a_stuck_one_cancelled(
    workspace: UnityCatalogEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.tools import unity_catalog

    monkeypatch.setattr(unity_catalog, "POLL_S", 0.01)
    monkeypatch.setattr(workspace, "pending_polls", 3)  # PENDING on the first reply and 2 polls
    (tool,) = load_tools(["uc:main.tools.convert_currency"])
    assert tool.invoke({"amount": 2}) == "4.0"
    polls = [r for r in workspace.requests if r.method == "GET" and "/sql/statements/" in r.path]
    assert len(polls) == 3
    monkeypatch.setattr(workspace, "pending_polls", 10**6)
    monkeypatch.setattr(unity_catalog, "STATEMENT_TIMEOUT_S", 0.05)
    with pytest.raises(ToolError, match="was cancelled"):
        tool.invoke({"amount": 2})
    assert workspace.requests[-1].path.endswith("/cancel")


def test_a_long_table_is_cut_and_says_so(
    workspace: UnityCatalogEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.tools import unity_catalog

    monkeypatch.setattr(unity_catalog, "MAX_ROWS", 1)
    (orders,) = load_tools(["uc:main.tools.recent_orders"])
    table, note = orders.invoke({"customer": "acme"}).split("\n")
    assert json.loads(table) == [{"order": "acme-1", "total": "12.5"}] and note == "(only the first 1 rows)"
    (posted,) = [r.body for r in workspace.requests if r.method == "POST"]
    assert posted["row_limit"] == 2


def test_the_deadline_counts_the_time_the_statement_took_to_submit(
    workspace: UnityCatalogEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.tools import unity_catalog

    monkeypatch.setattr(unity_catalog, "POLL_S", 0.05)
    monkeypatch.setattr(unity_catalog, "STATEMENT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(workspace, "pending_polls", 10**6)
    monkeypatch.setattr(workspace, "execute_delay_s", 0.28)  # most of the deadline goes on submitting
    (tool,) = load_tools(["uc:main.tools.convert_currency"])
    with pytest.raises(ToolError, match="was cancelled"):
        tool.invoke({"amount": 2})
    polls = [r for r in workspace.requests if r.method == "GET" and "/sql/statements/" in r.path]
    assert len(polls) <= 1  # a deadline started after the submit would allow about 6
    assert _statements(workspace)[0]["wait_timeout"] == "0s"  # never longer than the deadline
