"""MCP tool specs, connections (env, secrets, Databricks URLs), results, and what logged models declare."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from ragworks.agents.logged_model import databricks_resources, needed_extras
from ragworks.config import AgentConfig, MCPServerConfig
from ragworks.errors import ConfigError
from ragworks.tools._loop import background_loop
from ragworks.tools._mcp_connect import WorkspaceAuth, connection, databricks_url, describe
from ragworks.tools.mcp import MCPClients, MCPSpec, content_text, parse_spec
from ragworks.tools.mcp_resources import mcp_databricks_resources


def test_specs_name_a_server_and_maybe_one_tool() -> None:
    assert parse_spec("mcp:files") == MCPSpec(server="files")
    assert parse_spec("mcp:files/read") == MCPSpec(server="files", tool="read")
    for bad in ("mcp:", "mcp:files/", "mcp:a/b/c", "mcp:/read"):
        with pytest.raises(ConfigError, match="mcp:<server> or mcp:<server>/<tool>"):
            parse_spec(bad)


def test_a_server_is_in_exactly_one_place() -> None:
    with pytest.raises(ConfigError, match="exactly one of command"):
        AgentConfig.load({"mcp_servers": {"x": {"command": ["a"], "url": "http://h/mcp"}}})
    with pytest.raises(ConfigError, match="exactly one of command"):
        AgentConfig.load({"mcp_servers": {"x": {"args": ["a"]}}})
    with pytest.raises(ConfigError, match="transport 'stdio' does not fit url"):
        AgentConfig.load({"mcp_servers": {"x": {"url": "http://h/mcp", "transport": "stdio"}}})


def test_stdio_connection_expands_env_and_bounds_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS_ROOT", "/srv/docs")
    server = MCPServerConfig(command=["python", "s.py"], args=["--fast"], env={"ROOT": "${DOCS_ROOT}/x"})
    conn = connection("files", server)
    assert (conn["command"], conn["args"]) == ("python", ["s.py", "--fast"])
    assert conn["env"] == {"ROOT": "/srv/docs/x"}
    assert conn["session_kwargs"]["read_timeout_seconds"] == timedelta(seconds=60)
    assert server.env == {"ROOT": "${DOCS_ROOT}/x"}  # the config keeps the reference, not the value


def test_a_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    server = MCPServerConfig(url="https://crm/mcp", headers={"Authorization": "Bearer ${CRM_TOKEN}"})
    unset = r"mcp_servers\.crm\.headers\.Authorization .* CRM_TOKEN, which is not set"
    with pytest.raises(ConfigError, match=unset):
        connection("crm", server)


def test_a_secret_written_into_the_config_is_refused() -> None:
    server = MCPServerConfig(url="https://crm/mcp", headers={"X-Api-Key": "sk-live-123"})
    with pytest.raises(ConfigError, match=r"headers\.X-Api-Key looks like a secret") as info:
        connection("crm", server)
    assert "sk-live-123" not in str(info.value)
    plain = connection("crm", MCPServerConfig(url="https://crm/mcp", headers={"X-Client": "ragworks"}))
    assert plain["headers"] == {"X-Client": "ragworks"}
    assert "sk-live" not in describe(server)


def test_http_connection_bounds_connect_and_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", "abc")
    server = MCPServerConfig(url="http://h/mcp", headers={"Authorization": "Bearer ${T}"}, timeout_s=5)
    conn = connection("h", server)
    assert conn["transport"] == "streamable_http"
    assert conn["headers"] == {"Authorization": "Bearer abc"}
    assert (conn["timeout"], conn["sse_read_timeout"]) == (5, 5)


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("genie/01ef12", "https://ws.example.com/api/2.0/mcp/genie/01ef12"),
        ("functions/main/tools", "https://ws.example.com/api/2.0/mcp/functions/main/tools"),
        ("vector-search/main/docs/idx", "https://ws.example.com/api/2.0/mcp/vector-search/main/docs/idx"),
    ],
)
def test_databricks_managed_server_urls(path: str, url: str) -> None:
    assert databricks_url(path, host="https://ws.example.com/") == url


@pytest.mark.parametrize("path", ["genie", "sql/x/y", "functions/main", "genie/a/b", "vector-search/a/b/c/d"])
def test_unknown_managed_servers_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="names no managed MCP server"):
        databricks_url(path, host="https://ws")


def test_workspace_auth_is_asked_on_every_request() -> None:
    class Workspace:
        calls = 0

        def authenticate(self) -> dict[str, str]:
            Workspace.calls += 1
            return {"Authorization": f"Bearer t{Workspace.calls}"}

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(handler), auth=WorkspaceAuth(Workspace())) as client:
        client.get("https://ws/api/2.0/mcp/genie/x")
        client.get("https://ws/api/2.0/mcp/genie/x")
    assert seen == ["Bearer t1", "Bearer t2"]  # a refreshed OAuth token is picked up


def test_results_become_text() -> None:
    assert content_text("plain") == "plain"
    image = {"type": "image", "base64": "..."}
    blocks = [{"type": "text", "text": "a"}, image, {"type": "text", "text": "b"}]
    assert content_text(blocks) == "a\n[image content, not shown]\nb"


def test_undeclared_servers_are_named_with_the_declared_ones() -> None:
    clients = MCPClients({"files": MCPServerConfig(command=["x"])})
    undeclared = r"'crm' is not declared; add it under mcp_servers \(declared: files\)"
    with pytest.raises(ConfigError, match=undeclared):
        clients.load(["mcp:crm"])


def test_background_loop_bounds_a_call() -> None:
    with pytest.raises(TimeoutError):
        background_loop().run(asyncio.sleep(5), timeout=0.05)
    assert background_loop().run(asyncio.sleep(0, result=7), timeout=1) == 7


def _tool_config(servers: dict[str, dict[str, object]], tools: list[str]) -> AgentConfig:
    retriever = {"type": "langchain:x:y"}
    return AgentConfig(agent="tool-calling", retriever=retriever, tools=tools, mcp_servers=servers)


def test_logged_agents_declare_managed_servers_as_resources() -> None:
    servers = {
        "genie": {"databricks": "genie/01ef"},
        "fn": {"databricks": "functions/main/tools/convert"},
        "vs": {"databricks": "vector-search/main/docs"},
        "local": {"command": ["python", "s.py"]},
        "unused": {"databricks": "genie/zzz"},
    }
    cfg = _tool_config(servers, ["mcp:genie", "mcp:fn", "mcp:vs/main__docs__idx", "mcp:local"])
    listed = {"vs": ["main__docs__idx", "main__docs__faq", "helper"]}
    resources = mcp_databricks_resources(cfg, list_tools=lambda name, _: listed[name])
    assert sorted(str(r.to_dict()) for r in resources) == sorted(
        [
            "{'genie_space': [{'name': '01ef'}]}",
            "{'function': [{'name': 'main.tools.convert'}]}",
            "{'vector_search_index': [{'name': 'main.docs.idx'}]}",
            "{'vector_search_index': [{'name': 'main.docs.faq'}]}",
        ]
    )
    assert needed_extras(cfg) >= {"mcp", "databricks"}


def test_a_local_mcp_server_needs_only_the_mcp_extra_and_no_resources() -> None:
    cfg = _tool_config({"local": {"command": ["python", "s.py"]}}, ["mcp:local"])
    assert databricks_resources(cfg) == []
    assert "mcp" in needed_extras(cfg) and "databricks" not in needed_extras(cfg)
    rag = cfg.model_copy(update={"agent": "rag"})
    assert "mcp" not in needed_extras(rag)  # a rag agent binds no tools


def test_a_url_never_shows_its_credentials_and_reads_them_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCP_KEY", "k-123")
    config = MCPServerConfig(url="http://127.0.0.1:9/mcp?key=${MCP_KEY}")
    assert connection("search", config)["url"] == "http://127.0.0.1:9/mcp?key=k-123"
    assert "k-123" not in describe(config) and "MCP_KEY" not in describe(config)
    with_password = MCPServerConfig(url="http://ana:s3cret@127.0.0.1:9/mcp")
    assert "s3cret" not in describe(with_password)
    with pytest.raises(ConfigError, match="holds a password") as raised:
        connection("search", with_password)
    assert "s3cret" not in str(raised.value)
