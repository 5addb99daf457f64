"""What a logged agent declares for its MCP tools: the extras it needs and its Databricks resources.

A Databricks managed MCP server names what Model Serving must grant the agent: a Genie space
(`genie/<space_id>`), a function (`functions/<catalog>/<schema>/<function>`) or a Vector Search index
(`vector-search/<catalog>/<schema>/<index>`). A whole schema (`functions/<catalog>/<schema>`) is
declared as the functions or indexes its server lists when the agent is logged (tool names
`<catalog>__<schema>__<name>`).

Example:
    >>> servers = {"g": {"databricks": "genie/01ab"}}
    >>> cfg = AgentConfig(agent="tool-calling", tools=["mcp:g"], mcp_servers=servers)
    >>> [type(r).__name__ for r in mcp_databricks_resources(cfg)]
    ['DatabricksGenieSpace']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ragworks.config import AgentConfig, MCPServerConfig
from ragworks.tools.mcp import PREFIX, MCPClients, close_mcp_tools, parse_spec

if TYPE_CHECKING:
    from mlflow.models.resources import DatabricksResource

logger = logging.getLogger(__name__)

ListTools = Callable[[str, MCPServerConfig], list[str]]
"""Lists the tool names of a server (by name and config)."""


def used_servers(cfg: AgentConfig) -> dict[str, MCPServerConfig]:
    """The MCP servers a tool-calling config's `mcp:` tools use."""
    if cfg.agent != "tool-calling":
        return {}
    names = {parse_spec(spec).server for spec in cfg.tools if spec.startswith(PREFIX)}
    return {n: cfg.mcp_servers[n] for n in sorted(names) if n in cfg.mcp_servers}


def mcp_extras(cfg: AgentConfig) -> set[str]:
    """The ragworks extras the agent's MCP tools need where it is served."""
    servers = used_servers(cfg)
    extras = {"mcp"} if servers else set()
    if any(s.databricks for s in servers.values()):
        extras.add("databricks")
    return extras


def mcp_databricks_resources(
    cfg: AgentConfig, *, list_tools: ListTools | None = None
) -> list[DatabricksResource]:
    """The Databricks resources behind the agent's managed MCP servers (see the module docstring)."""
    from mlflow.models.resources import DatabricksFunction, DatabricksGenieSpace, DatabricksVectorSearchIndex

    resources: list[DatabricksResource] = []
    for name, server in used_servers(cfg).items():
        if not server.databricks:
            continue
        kind, *parts = server.databricks.strip("/").split("/")
        if kind == "genie":
            resources.append(DatabricksGenieSpace(genie_space_id=parts[0]))
            continue
        full_names = [".".join(parts)] if len(parts) == 3 else _listed(name, server, list_tools)
        if kind == "functions":
            resources.extend(DatabricksFunction(function_name=n) for n in full_names)
        elif kind == "vector-search":
            resources.extend(DatabricksVectorSearchIndex(index_name=n) for n in full_names)
    return resources


def _listed(name: str, server: MCPServerConfig, list_tools: ListTools | None) -> list[str]:
    """The `catalog.schema.name` of each tool a schema-wide managed server lists."""
    names = (list_tools or _list_tools)(name, server)
    found = [n.replace("__", ".") for n in names if n.count("__") == 2]
    if len(found) < len(names):
        logger.info("MCP server %s: tools not named catalog__schema__name are not resources", name)
    return found


def _list_tools(name: str, server: MCPServerConfig) -> list[str]:
    tools = MCPClients({name: server}).load([f"{PREFIX}{name}"])[f"{PREFIX}{name}"]
    close_mcp_tools(tools)
    return [getattr(t, "remote_name", t.name) for t in tools]
