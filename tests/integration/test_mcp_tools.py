"""Tools from MCP servers: real server processes (stdio and streamable HTTP on 127.0.0.1), the real `mcp`
client through langchain-mcp-adapters, a tool-calling agent with a scripted model, traces in SQLite."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from mlflow.entities import SpanStatusCode, SpanType, Trace

from ragworks.agents.deadline import request_deadline
from ragworks.agents.graphs import build_tool_agent
from ragworks.agents.responses_agent import RagResponsesAgent
from ragworks.config import AgentConfig, MCPServerConfig
from ragworks.errors import ConfigError, ToolError
from ragworks.retrieval import get_retriever
from ragworks.testing import ScriptedChatModel
from ragworks.tools import agent_tools
from ragworks.tools import mcp as mcp_module
from ragworks.tools.mcp import SERVER_ATTRIBUTE, MCPClients, MCPTool, close_mcp_tools

SERVER = str(Path(__file__).with_name("mcp_demo_server.py"))
STDIO = {"command": [sys.executable, SERVER, "stdio"]}
SECRET = "mcp-secret-7f3a9c"
MCP_PATH = "/api/2.0/mcp/genie/space1"
"""The HTTP server answers where a Databricks Genie space's managed MCP server would."""


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temp SQLite store with every trace sampled."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    mlflow.tracing.reset()
    yield
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


@pytest.fixture(scope="module")
def stdio_tools() -> Iterator[dict[str, BaseTool]]:
    """The demo server's tools over one stdio session, shared by the tests of this module."""
    tools = MCPClients({"demo": MCPServerConfig(**STDIO)}).load(["mcp:demo"])["mcp:demo"]
    yield {t.name: t for t in tools}
    close_mcp_tools(tools)


def _http_server(*args: str) -> tuple[subprocess.Popen[str], int]:
    """Start the demo server over streamable HTTP; its process and port."""
    env = {**os.environ, "DEMO_EXPECTED_AUTH": f"Bearer {SECRET}"}
    command = [sys.executable, SERVER, "http", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()  # the server prints its port once it listens
    assert line.startswith("PORT "), f"the demo server did not start: {line!r}"
    return process, int(line.split()[1])


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """The demo server over streamable HTTP, requiring `Authorization: Bearer <SECRET>`."""
    process, port = _http_server("--path", MCP_PATH, "--require-header", "Authorization=DEMO_EXPECTED_AUTH")
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _agent(tools: list[BaseTool], replies: list[AIMessage], index: str) -> tuple[RagResponsesAgent, Any]:
    retriever = get_retriever({"type": "local", "index": index, "k": 2})
    model = ScriptedChatModel(responses=replies)
    graph = build_tool_agent(model, [*agent_tools(retriever), *tools])
    return RagResponsesAgent(graph, config=AgentConfig(agent="tool-calling")), model


def _call(name: str, args: dict[str, Any], call_id: str = "c1") -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])


def _ask(agent: RagResponsesAgent, text: str) -> Trace:
    agent.predict({"input": [{"role": "user", "content": text}]})
    trace_id = mlflow.get_last_active_trace_id()
    assert trace_id is not None
    trace = mlflow.get_trace(trace_id, flush=True)
    assert trace is not None
    return trace


def _tool_spans(trace: Trace) -> list[Any]:
    return [s for s in trace.data.spans if s.span_type == SpanType.TOOL]


def test_server_tools_keep_their_typed_schemas(stdio_tools: dict[str, BaseTool]) -> None:
    assert {"add", "shout", "fail", "slow", "pid", "calls"} <= set(stdio_tools)
    add = stdio_tools["add"]
    assert isinstance(add, MCPTool)
    assert add.description == "Add two whole numbers."
    assert add.tool_call_schema["properties"]["a"]["type"] == "integer"  # type: ignore[index]
    assert add.tool_call_schema["required"] == ["a", "b"]  # type: ignore[index]


@pytest.mark.usefixtures("tracking")
def test_agent_calls_a_stdio_tool_in_a_tool_span(stdio_tools: dict[str, BaseTool], docs_index: str) -> None:
    replies = [_call("add", {"a": 2, "b": 40}), AIMessage("2 + 40 is 42.")]
    agent, model = _agent([stdio_tools["add"]], replies, docs_index)
    trace = _ask(agent, "What is 2 + 40?")
    (span,) = _tool_spans(trace)
    assert span.name == "add"
    assert span.inputs["args"] == {"a": 2, "b": 40}
    assert span.outputs == {"content": "42"}
    assert span.attributes[SERVER_ATTRIBUTE] == "demo"
    assert span.status.status_code == SpanStatusCode.OK
    seen = [m for m in model.history[-1] if isinstance(m, ToolMessage)]
    assert [(m.content, m.status) for m in seen] == [("42", "success")]
    assert "add" in model.bound_tools


@pytest.mark.usefixtures("tracking")
def test_a_tool_that_raises_reaches_the_model_as_an_error(
    stdio_tools: dict[str, BaseTool], docs_index: str
) -> None:
    replies = [_call("fail", {"reason": "no stock"}), AIMessage("The tool failed, sorry.")]
    agent, model = _agent([stdio_tools["fail"]], replies, docs_index)
    trace = _ask(agent, "Order one.")
    (span,) = _tool_spans(trace)
    assert span.status.status_code == SpanStatusCode.ERROR
    (message,) = [m for m in model.history[-1] if isinstance(m, ToolMessage)]
    assert message.status == "error"
    assert "refused: no stock" in str(message.content)
    assert trace.info.state.value == "OK"  # the run went on: the model answered after the error
    assert model.history[-1] and len(model.history) == 2


def test_one_session_serves_every_call_from_any_thread(stdio_tools: dict[str, BaseTool]) -> None:
    before = int(stdio_tools["calls"].invoke({}))
    with ThreadPoolExecutor(max_workers=4) as pool:
        sums = list(pool.map(lambda i: stdio_tools["add"].invoke({"a": i, "b": 1}), range(8)))
    assert sums == [str(i + 1) for i in range(8)]
    after = int(stdio_tools["calls"].invoke({}))
    assert after == before + 9  # one server process counted them all: the session was reused


def test_a_call_is_bounded_by_the_request_deadline(stdio_tools: dict[str, BaseTool]) -> None:
    started = time.monotonic()
    with request_deadline(1.0), pytest.raises(ToolError, match=r"did not answer within 1\.0 s"):
        stdio_tools["slow"].invoke({"seconds": 20})
    assert time.monotonic() - started < 5
    assert stdio_tools["add"].invoke({"a": 1, "b": 1}) == "2"  # the session is still usable


@pytest.mark.slow  # starts a server process of its own
def test_a_server_that_dies_is_reconnected_by_the_next_call() -> None:
    tools = MCPClients({"demo": MCPServerConfig(**STDIO)}).load(["mcp:demo/pid"])["mcp:demo/pid"]
    (pid_tool,) = tools
    try:
        first = int(pid_tool.invoke({}))
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ToolError, match="MCP server 'demo'"):
            for _ in range(50):  # the session learns of the death on its next read or write
                pid_tool.invoke({})
                time.sleep(0.1)
        second = int(pid_tool.invoke({}))
        assert second != first
    finally:
        close_mcp_tools(tools)


@pytest.mark.slow  # starts a server process of its own
def test_a_call_to_an_http_server_that_went_away_fails_at_once() -> None:
    process, port = _http_server()
    servers = {"web": MCPServerConfig(url=f"http://127.0.0.1:{port}/mcp", timeout_s=30)}
    tools = MCPClients(servers).load(["mcp:web/add"])["mcp:web/add"]
    try:
        assert tools[0].invoke({"a": 1, "b": 2}) == "3"
        process.kill()
        process.wait(timeout=10)
        started = time.monotonic()
        with pytest.raises(ToolError, match="MCP server 'web'"):
            tools[0].invoke({"a": 1, "b": 2})
        assert time.monotonic() - started < 10  # not the 30 s call timeout
    finally:
        close_mcp_tools(tools)


@pytest.mark.slow  # starts a server process of its own
def test_closing_ends_a_stdio_server_process() -> None:
    tools = MCPClients({"demo": MCPServerConfig(**STDIO)}).load(["mcp:demo/pid"])["mcp:demo/pid"]
    pid = int(tools[0].invoke({}))
    close_mcp_tools(tools)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)
    with pytest.raises(ToolError, match="closed"):
        tools[0].invoke({})


@pytest.mark.slow  # starts a server process of its own
def test_an_agent_dropped_without_close_ends_its_server_process() -> None:
    import gc

    tools = MCPClients({"demo": MCPServerConfig(**STDIO)}).load(["mcp:demo/pid"])["mcp:demo/pid"]
    pid = int(tools[0].invoke({}))
    del tools
    gc.collect()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped) has exited too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _config(servers: dict[str, Any], tools: list[str], index: str) -> AgentConfig:
    return AgentConfig(
        agent="tool-calling",
        retriever={"type": "local", "index": index, "k": 2},
        mcp_servers=servers,
        tools=tools,
    )


def test_a_dead_server_is_one_clear_error_when_the_agent_is_built(docs_index: str) -> None:
    from ragworks.agents import build_agent

    dead = {"command": [sys.executable, "-c", "import sys; sys.exit(3)"], "startup_timeout_s": 20}
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"MCP server 'broken' \(command .*\) could not be started"):
        build_agent(_config({"broken": dead}, ["mcp:broken"], docs_index))
    assert time.monotonic() - started < 15
    with pytest.raises(ConfigError, match=r"MCP server 'nowhere' .*127\.0\.0\.1:9.* could not be started"):
        build_agent(_config({"nowhere": {"url": "http://127.0.0.1:9/mcp"}}, ["mcp:nowhere"], docs_index))
    with pytest.raises(ConfigError, match=r"'ghost' is not declared; add it under mcp_servers"):
        build_agent(_config({}, ["mcp:ghost"], docs_index))
    mute = {"command": [sys.executable, "-c", "import time; time.sleep(60)"], "startup_timeout_s": 2}
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"'mute' .* no answer within startup_timeout_s=2 s"):
        build_agent(_config({"mute": mute}, ["mcp:mute"], docs_index))
    assert time.monotonic() - started < 10


@pytest.mark.usefixtures("tracking")
def test_http_headers_come_from_the_environment_and_stay_out_of_the_trace(
    http_port: int, docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{http_port}{MCP_PATH}"
    server = {"url": url, "headers": {"Authorization": "Bearer ${DEMO_TOKEN}"}}
    config = _config({"remote": server}, ["mcp:remote/shout"], docs_index)
    monkeypatch.delenv("DEMO_TOKEN", raising=False)
    unset = r"mcp_servers\.remote\.headers\.Authorization reads the environment variable DEMO_TOKEN, which"
    with pytest.raises(ConfigError, match=unset):
        agent_tools(get_retriever(config.retriever), config.tools, mcp_servers=config.mcp_servers)
    monkeypatch.setenv("DEMO_TOKEN", "wrong")
    with pytest.raises(ConfigError, match=r"MCP server 'remote' .* HTTP 401 Unauthorized") as refused:
        agent_tools(get_retriever(config.retriever), config.tools, mcp_servers=config.mcp_servers)
    assert "wrong" not in str(refused.value)

    monkeypatch.setenv("DEMO_TOKEN", SECRET)
    tools = agent_tools(get_retriever(config.retriever), config.tools, mcp_servers=config.mcp_servers)
    try:
        replies = [_call("shout", {"text": "hello"}), AIMessage("It says HELLO.")]
        model = ScriptedChatModel(responses=replies)
        agent = RagResponsesAgent(build_tool_agent(model, tools), config=config)
        trace = _ask(agent, "Shout hello.")
        (span,) = _tool_spans(trace)
        assert span.outputs == {"content": "HELLO"}  # the server let the call in: the header reached it
        assert SECRET not in trace.to_json()
        assert SECRET not in json.dumps(config.model_dump(mode="json"))
        assert "${DEMO_TOKEN}" in json.dumps(config.model_dump(mode="json"))
    finally:
        close_mcp_tools(tools)


@pytest.mark.slow  # starts a server process of its own
def test_a_databricks_managed_server_uses_the_workspace_url_and_auth(
    http_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    monkeypatch.setenv("DATABRICKS_HOST", f"http://127.0.0.1:{http_port}")
    monkeypatch.setenv("DATABRICKS_TOKEN", SECRET)
    servers = {"genie": MCPServerConfig(databricks="genie/space1")}
    tools = MCPClients(servers).load(["mcp:genie/add"])["mcp:genie/add"]
    try:
        assert tools[0].invoke({"a": 20, "b": 22}) == "42"
    finally:
        close_mcp_tools(tools)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    refused = r"MCP server 'genie' \(Databricks managed MCP server genie/space1\) .*HTTP 401"
    with pytest.raises(ConfigError, match=refused):
        MCPClients(servers).load(["mcp:genie"])


@pytest.mark.parametrize("command", [["chat", "What is 2 + 2?"], ["serve", "--port", "{port}"]])
def test_a_dead_server_stops_chat_and_serve_with_one_error_line(
    command: list[str], docs_index: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from ragworks.cli import app

    dead = {"command": [sys.executable, "-c", "import sys; sys.exit(3)"], "startup_timeout_s": 20}
    config = tmp_path / "agent.yaml"
    _config({"broken": dead}, ["mcp:broken"], docs_index).to_yaml(config)
    with socket.socket() as sock:  # a free port, for serve
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    args = [arg.replace("{port}", port) for arg in command]
    result = CliRunner().invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 1
    assert result.output.count("MCP server 'broken'") == 1
    assert "could not be started" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow  # logs and loads a model, each starting the server
def test_a_logged_agent_declares_its_servers_without_secrets(
    docs_index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragworks.agents.logged_model import log_agent

    monkeypatch.setenv("DEMO_MCP_KEY", SECRET)
    servers = {"demo": {**STDIO, "env": {"DEMO_KEY": "${DEMO_MCP_KEY}"}}}
    config = _config(servers, ["mcp:demo/add"], docs_index)
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        info = log_agent(config, name="mcp-agent")
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
        declared = info.flavors["python_function"]["config"]["mcp_servers"]["demo"]
        assert declared["command"] == STDIO["command"]
        assert declared["env"] == {"DEMO_KEY": "${DEMO_MCP_KEY}"}
        stored = [f for f in local.rglob("*") if f.is_file() and f.suffix != ".pyc"]
        assert not [f for f in stored if SECRET.encode() in f.read_bytes()]
        requirements = (local / "requirements.txt").read_text()
        if any("mcp" in r for r in importlib.metadata.requires("ragworks") or []):  # metadata has the extra
            assert "langchain-mcp-adapters==" in requirements and "\nmcp==" in f"\n{requirements}"
        before = set(mcp_module._OPEN)
        mlflow.pyfunc.load_model(info.model_uri)
        (session,) = set(mcp_module._OPEN) - before  # the loaded model started its own server
        assert session.name == "demo" and "add" in {t.name for t in session.tools}
        assert session.call("add", {"a": 40, "b": 2}) == "42"
        session.close()
    finally:
        mlflow.set_tracking_uri(original)



@pytest.mark.usefixtures("tracking")
def test_served_agent_calls_the_tool_from_the_servers_worker_threads(
    stdio_tools: dict[str, BaseTool], docs_index: str
) -> None:
    from openai import OpenAI

    from ragworks.serving import build_app, serve_in_thread

    replies = [
        reply
        for i in range(3)
        for reply in (_call("add", {"a": i, "b": 100}, f"c{i}"), AIMessage(f"The sum is {i + 100}."))
    ]
    agent, model = _agent([stdio_tools["add"]], replies, docs_index)
    with serve_in_thread(build_app(agent, api_token="")) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        answers = [client.responses.create(model="m", input=f"{i} + 100?").output_text for i in range(3)]
    assert answers == ["The sum is 100.", "The sum is 101.", "The sum is 102."]
    results = [m.content for prompt in model.history for m in prompt if isinstance(m, ToolMessage)]
    assert sorted(set(results)) == ["100", "101", "102"]
