"""Against a real Databricks workspace; skipped unless these are set (the emulators stand in elsewhere).

    DATABRICKS_HOST + DATABRICKS_TOKEN (or a service principal, or a profile)
    RAGWORKS_LIVE_VS_INDEX        a Vector Search index (catalog.schema.index) to query
    RAGWORKS_LIVE_VS_ENDPOINT     its endpoint (optional)
    RAGWORKS_LIVE_VS_QUERY        the query to send (default: "What is this about?")
    RAGWORKS_LIVE_UC_FUNCTION     a Unity Catalog function (catalog.schema.function) to load as a tool
    RAGWORKS_LIVE_UC_ARGS         JSON arguments to call it with (optional)
    DATABRICKS_WAREHOUSE_ID       the SQL warehouse the function runs on
"""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.live


def _need(*names: str) -> dict[str, str]:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.skip(f"set {', '.join(missing)} to run against a real workspace")
    return {n: os.environ[n] for n in names}


def test_vector_search_retriever_queries_a_real_index() -> None:
    env = _need("DATABRICKS_HOST", "RAGWORKS_LIVE_VS_INDEX")
    from ragworks.retrieval import get_retriever

    retriever = get_retriever(
        {
            "type": "databricks-vector-search",
            "index": env["RAGWORKS_LIVE_VS_INDEX"],
            "endpoint": os.environ.get("RAGWORKS_LIVE_VS_ENDPOINT") or None,
            "k": 3,
        }
    )
    docs = retriever.invoke(os.environ.get("RAGWORKS_LIVE_VS_QUERY", "What is this about?"))
    assert 1 <= len(docs) <= 3
    assert all(d.id and d.page_content and d.metadata["source"] for d in docs)
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_unity_catalog_function_runs_as_a_tool() -> None:
    env = _need("DATABRICKS_HOST", "DATABRICKS_WAREHOUSE_ID", "RAGWORKS_LIVE_UC_FUNCTION")
    from ragworks.tools import load_tools

    (tool,) = load_tools([f"uc:{env['RAGWORKS_LIVE_UC_FUNCTION']}"])
    assert tool.name == env["RAGWORKS_LIVE_UC_FUNCTION"].replace(".", "__")
    assert tool.get_input_schema().model_json_schema()["type"] == "object"
    arguments = os.environ.get("RAGWORKS_LIVE_UC_ARGS")
    if arguments:
        assert isinstance(tool.invoke(json.loads(arguments)), str)
