"""Tools by name: `module:function` specs from the config become LangChain tools.

`uc:<catalog>.<schema>.<function>` names a Unity Catalog function instead (`tools/unity_catalog.py`),
and `mcp:<server>[/<tool>]` the tools of an MCP server declared in the config (`tools/mcp.py`).

A function becomes a `StructuredTool` whose argument schema comes from its type hints (pydantic
models included) and whose description is its docstring. A `BaseTool` instance is used as it is.

Example:
    >>> tools = load_tools(["my_pkg.tools:get_weather"])        # doctest: +SKIP
    >>> tools[0].name                                            # doctest: +SKIP
    'get_weather'
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, StructuredTool

from ragworks._imports import import_object
from ragworks.config import FilterableField, MCPServerConfig
from ragworks.errors import ConfigError
from ragworks.tools.mcp import PREFIX as MCP_PREFIX
from ragworks.tools.mcp import close_mcp_tools, load_mcp_tools
from ragworks.tools.retriever_tool import make_retriever_tool
from ragworks.tools.unity_catalog import PREFIX as UC_PREFIX
from ragworks.tools.unity_catalog import load_uc_function


def load_tool(spec: str) -> BaseTool:
    """The tool a spec names: `module:function` (imported), or `uc:catalog.schema.function`."""
    if spec.startswith(UC_PREFIX):
        return load_uc_function(spec)
    target = import_object(spec, what="tool", form="module:function")
    attr = spec.partition(":")[2]
    if isinstance(target, BaseTool):
        return target
    if not callable(target):
        raise ConfigError(f"Tool {spec!r} is a {type(target).__name__}, not a function or a LangChain tool.")
    description = inspect.getdoc(target) or f"Call {attr}."
    try:
        return StructuredTool.from_function(func=target, name=attr, description=description)
    except Exception as exc:  # untyped or unsupported signatures
        raise ConfigError(f"Cannot turn {spec!r} into a tool: {exc}. Give its arguments type hints.") from exc


def load_tools(
    specs: Sequence[str], *, mcp_servers: Mapping[str, MCPServerConfig] | None = None
) -> list[BaseTool]:
    """Import every tool the config lists; `mcp:` specs start (or reach) their servers, once each, last."""
    single = {spec: load_tool(spec) for spec in specs if not spec.startswith(MCP_PREFIX)}
    mcp = [spec for spec in specs if spec.startswith(MCP_PREFIX)]
    served = load_mcp_tools(mcp, mcp_servers or {}) if mcp else {}
    return [tool for spec in specs for tool in (served[spec] if spec in served else [single[spec]])]


def agent_tools(
    retriever: BaseRetriever,
    specs: Sequence[str] = (),
    *,
    mcp_servers: Mapping[str, MCPServerConfig] | None = None,
    filterable: Mapping[str, FilterableField] | None = None,
) -> list[BaseTool]:
    """The tools of a tool-calling agent: the retriever tool first, then the configured ones.

    `filterable`: the metadata fields the model may filter the retriever tool's searches on.
    """
    retriever_tool = make_retriever_tool(retriever, filterable=filterable)
    tools = [retriever_tool, *load_tools(specs, mcp_servers=mcp_servers)]
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        close_mcp_tools(tools)
        raise ConfigError(
            f"Tool names must be unique; {', '.join(duplicates)} appear twice. Rename one "
            "(an MCP server's tools get their server's name in front with `prefix: true`)."
        )
    return tools
