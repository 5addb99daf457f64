"""Tools from MCP servers: `tools: ["mcp:<server>"]` (every tool it lists) or `mcp:<server>/<tool>` (one).

    mcp_servers:
      files: {command: [python, files_server.py], env: {ROOT: "${DOCS_ROOT}"}}
      crm:   {url: "https://crm.example.com/mcp", headers: {Authorization: "Bearer ${CRM_TOKEN}"}}
      genie: {databricks: genie/01ef...}          # a Databricks managed MCP server, workspace auth
    tools: ["mcp:files", "mcp:crm/find_customer", "mcp:genie"]

The servers' tools are loaded through langchain-mcp-adapters: each keeps the JSON schema the server
declares (the model binds it as it is, and the server validates the arguments). When the agent is
built, each server is started (stdio) or reached (HTTP) once and its session is kept open on one
background event loop (`tools/_loop.py`), so calls from any thread reuse it; a server that cannot be
started, reached or listed is one `ConfigError` naming it. A call runs inside the agent's TOOL span;
the tool's own error, a timeout (`timeout_s`, capped by the request's time left) or a broken session
is a `ToolError` the model reads as the tool's answer. A broken session (the process died, the
connection dropped) is reopened by the next call. Sessions close with `close()`, when their
agent is garbage-collected, or at exit.

Example:
    >>> clients = MCPClients({"demo": MCPServerConfig(command=["python", "demo.py"])})  # doctest: +SKIP
    >>> tools = clients.load(["mcp:demo"])["mcp:demo"]                                  # doctest: +SKIP
    >>> tools[0].invoke({"a": 1, "b": 2})                                               # doctest: +SKIP
    '3'
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.tools import BaseTool, ToolException
from pydantic import ConfigDict

from ragworks.agents import deadline
from ragworks.config import MCPServerConfig
from ragworks.errors import ConfigError, ToolError
from ragworks.tools._loop import BackgroundLoop, background_loop
from ragworks.tools._mcp_connect import connection, describe, open_session

logger = logging.getLogger(__name__)

PREFIX = "mcp:"
CLOSE_TIMEOUT_S = 10.0
"""How long closing a session may take (a stdio server gets its stdin closed, then is terminated)."""
SERVER_ATTRIBUTE = "ragworks.mcp_server"
"""The TOOL span attribute naming the MCP server a call went to."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MCPSpec:
    """A parsed `mcp:<server>[/<tool>]` tool spec."""

    server: str
    tool: str | None = None


def parse_spec(spec: str) -> MCPSpec:
    """The server (and tool) an `mcp:` spec names."""
    server, _, tool = spec.removeprefix(PREFIX).partition("/")
    if not server or (spec.count("/") > 1) or ("/" in spec and not tool):
        raise ConfigError(f"MCP tool {spec!r} must be mcp:<server> or mcp:<server>/<tool>.")
    return MCPSpec(server=server, tool=tool or None)


_Ready = concurrent.futures.Future[tuple[asyncio.Event, list[BaseTool]]]
"""Set once a session is open: its stop event and the adapters' tools."""


class MCPTool(BaseTool):
    """One tool of an MCP server, called synchronously through its server's open session."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    server: str
    """The server's name in `mcp_servers`."""
    remote_name: str
    """The tool's name on the server (its `name` here may carry the server prefix)."""
    session: MCPServerSession

    def _run(self, **kwargs: Any) -> str:  # Any: the arguments the server's JSON schema declares
        _mark_span(self.server)
        return self.session.call(self.remote_name, kwargs)


def _mark_span(server: str) -> None:
    """Name the server on the TOOL span the agent opened for this call, when a trace is recorded."""
    try:
        import mlflow

        span = mlflow.get_current_active_span()
        if span is not None:
            span.set_attribute(SERVER_ATTRIBUTE, server)
    except Exception as exc:  # tracing must never break a call
        logger.debug("Could not annotate the tool span: %s", exc)


class MCPServerSession:
    """One server's MCP session, held open by a task on the background loop; reopened after it breaks."""

    def __init__(self, name: str, config: MCPServerConfig, loop: BackgroundLoop) -> None:
        self.name, self.config, self._loop = name, config, loop
        self._lock = threading.Lock()
        self._tools: dict[str, BaseTool] = {}
        """The adapters' tools, bound to the open session, by their name on the server."""
        self._handle = _Handle(loop=loop)
        # an agent dropped without close() (e.g. one built while a model was logged) closes its session
        weakref.finalize(self, self._handle.release)
        self._broken = False
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        """Calls waiting for an answer; failed at once when the session ends."""
        self.closed = False
        with _OPEN_LOCK:
            _OPEN.add(self)

    @property
    def tools(self) -> list[BaseTool]:
        """The adapters' tools of the open session (empty before it opened)."""
        return list(self._tools.values())

    def begin(self) -> _Ready:
        """Start opening the session; the future gets the stop event and the tools once it is open."""
        ready: _Ready = concurrent.futures.Future()
        conn = connection(self.name, self.config)
        self._handle.task = self._loop.submit(_hold(self.name, conn, ready, lost=_weakly(self._lost)))
        return ready

    def finish(self, ready: _Ready) -> list[BaseTool]:
        """Wait for the session `begin` started; a ConfigError naming the server when it did not open."""
        timeout = self.config.startup_timeout_s
        try:
            self._handle.stop, tools = ready.result(timeout)
        except concurrent.futures.TimeoutError:
            self._cancel()
            raise ConfigError(self._failed(f"no answer within startup_timeout_s={timeout:g} s")) from None
        except Exception as exc:
            self._cancel()
            raise ConfigError(self._failed(_reason(exc))) from exc
        self._tools = {t.name: t for t in tools}
        self._broken = False
        logger.info("MCP server %s: %d tools (%s)", self.name, len(tools), describe(self.config))
        return tools

    def _failed(self, reason: str) -> str:
        return (
            f"MCP server {self.name!r} ({describe(self.config)}) could not be started: {reason}. "
            "Check that it runs and speaks MCP (run the command yourself, or open the URL), and its "
            "credentials, then start again."
        )

    def _lost(self) -> None:
        """The server went away (its process exited): the next call reopens the session."""
        if not self.closed:
            self._broken = True
            for waiting in list(self._inflight):  # their answers will never come
                waiting.cancel()

    def call(self, tool_name: str, args: dict[str, Any]) -> str:
        """Call a tool of this server and return its text; every failure is a ToolError for the model."""
        tool = self._open_tool(tool_name)
        timeout = _call_timeout(self.config.timeout_s)
        future = self._loop.submit(tool.ainvoke(args))
        self._inflight.add(future)
        try:
            content = future.result(timeout)
        except concurrent.futures.CancelledError:
            raise ToolError(f"the MCP server {self.name!r} went away during the call; try again") from None
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ToolError(
                f"the MCP server {self.name!r} did not answer within {timeout:.1f} s; try a smaller request"
            ) from None
        except ToolException as exc:  # the tool ran and reported an error
            raise ToolError(str(exc)) from exc
        except Exception as exc:
            if _connection_lost(exc):
                self._broken = True
                raise ToolError(f"the MCP server {self.name!r} is unreachable ({_reason(exc)})") from exc
            raise ToolError(f"the MCP server {self.name!r} refused the call ({_reason(exc)})") from exc
        finally:
            self._inflight.discard(future)
        return content_text(content)

    def _open_tool(self, tool_name: str) -> BaseTool:
        """The adapters' tool for `tool_name`, reopening the session first when it broke."""
        with self._lock:
            if self.closed:
                raise ToolError(f"the MCP server {self.name!r} was closed with its agent")
            if self._broken:
                logger.info("MCP server %s: reconnecting", self.name)
                self._shutdown()
                try:
                    self.finish(self.begin())
                except ConfigError as exc:
                    raise ToolError(str(exc)) from None
            tool = self._tools.get(tool_name)
        if tool is None:
            raise ToolError(f"the MCP server {self.name!r} no longer lists the tool {tool_name!r}")
        return tool

    def close(self) -> None:
        """Close the session (a stdio server's process ends); later calls are ToolErrors."""
        with self._lock:
            self.closed = True
            self._shutdown()
        with _OPEN_LOCK:
            _OPEN.discard(self)

    def _shutdown(self) -> None:
        stop, task = self._handle.stop, self._handle.task
        self._handle.stop = self._handle.task = None
        if stop is not None:
            self._loop.loop.call_soon_threadsafe(stop.set)
        if task is not None:
            try:
                task.result(CLOSE_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                task.cancel()
            except BaseException as exc:  # it broke earlier: already logged
                logger.debug("MCP server %s closed after an error: %s", self.name, _reason(exc))

    def _cancel(self) -> None:
        if self._handle.task is not None:
            self._handle.task.cancel()
            self._handle.task = None


@dataclass(slots=True, kw_only=True)
class _Handle:
    """What keeps a session open, with no reference to its `MCPServerSession` (which may be collected)."""

    loop: BackgroundLoop
    stop: asyncio.Event | None = None
    """Set it (on the loop) and the holding task closes the session."""
    task: concurrent.futures.Future[None] | None = None
    """The holding task."""

    def release(self) -> None:
        """Ask the holding task to close the session, without waiting (from any thread)."""
        if self.stop is not None and not self.loop.loop.is_closed():
            self.loop.loop.call_soon_threadsafe(self.stop.set)


async def _hold(name: str, conn: dict[str, Any], ready: _Ready, *, lost: Callable[[], None]) -> None:
    """Open a session, hand over its tools, and keep it open until the stop event is set."""
    from langchain_mcp_adapters.tools import load_mcp_tools

    stop = asyncio.Event()
    try:
        # entered and left in this one task, as the transports' anyio task groups require
        async with open_session(conn, on_closed=lost) as session:
            await session.initialize()
            tools = await load_mcp_tools(session, server_name=name, handle_tool_errors=False)
            ready.set_result((stop, tools))
            await stop.wait()
    except BaseException as exc:  # CancelledError included: the waiting caller must hear of it
        if not ready.done():
            ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(_reason(exc)))
        elif not stop.is_set():
            logger.warning("MCP server %s: the session ended (%s)", name, _reason(exc))
            lost()
        if not isinstance(exc, Exception):
            raise


def _weakly(method: Callable[[], None]) -> Callable[[], None]:
    """Call a bound method while its object lives, without keeping it alive."""
    ref = weakref.WeakMethod(method)

    def call() -> None:
        target = ref()
        if target is not None:
            target()

    return call


def _call_timeout(configured: float) -> float:
    """The server's timeout, capped by the current request's time left."""
    left = deadline.remaining()
    if left is None:
        return configured
    if left <= 0:
        raise ToolError("the request has no time left for this tool call")
    return min(configured, left)


_KNOCK_ON = frozenset({"CancelledError", "ClosedResourceError", "BrokenResourceError", "EndOfStream"})
"""Errors that follow from another one in a task group (a stream closed because its task failed)."""


def _leaf(exc: BaseException) -> BaseException:
    """The error that caused an (anyio) exception group: its first leaf that is not a knock-on error."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        nested = getattr(current, "exceptions", None)
        if nested:
            pending = [*nested, *pending]
        else:
            leaves.append(current)
    return next((e for e in leaves if type(e).__name__ not in _KNOCK_ON), leaves[0] if leaves else exc)


def _reason(exc: BaseException) -> str:
    """The innermost error of an (anyio) exception group, as `Type: message` (its first line)."""
    leaf = _leaf(exc)
    response = getattr(leaf, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):  # an HTTP error: the status says it all (no URL query, no advice links)
        return f"HTTP {status} {getattr(response, 'reason_phrase', '')}".rstrip()
    if _is_mcp_error(leaf) and _closed(leaf):
        return "the connection closed before an answer (the server process exited, or the server hung up)"
    text = str(leaf).strip().splitlines()
    return f"{type(leaf).__name__}: {text[0]}" if text else type(leaf).__name__


def _connection_lost(exc: BaseException) -> bool:
    """Whether a call failed because the session is gone (then the next call reconnects)."""
    leaf = _leaf(exc)
    if _is_mcp_error(leaf):
        return _closed(leaf)
    return True  # transport errors: closed streams, broken pipes, dropped HTTP connections


def _is_mcp_error(exc: BaseException) -> bool:
    from mcp.shared.exceptions import McpError

    return isinstance(exc, McpError)


def _closed(exc: BaseException) -> bool:
    """An McpError saying the connection closed (a JSON-RPC error would leave the session usable)."""
    from mcp.types import CONNECTION_CLOSED

    return getattr(getattr(exc, "error", None), "code", None) == CONNECTION_CLOSED


def content_text(content: Any) -> str:
    """The text of a tool result (Any: a string or LangChain content blocks); other media are named."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else [content]:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict):
            parts.append(f"[{block.get('type', 'non-text')} content, not shown]")
        else:
            parts.append(str(block))
    return "\n".join(parts)


def _require_adapters() -> None:
    """A ConfigError with the install command when the `mcp` extra is missing."""
    try:
        import langchain_mcp_adapters  # noqa: F401
        import mcp  # noqa: F401
    except ImportError:
        raise ConfigError("mcp: tools need the mcp extra: pip install 'ragworks[mcp]'") from None


class MCPClients:
    """The MCP servers one agent uses: a session per server, opened by `load`, closed by `close`."""

    def __init__(self, servers: Mapping[str, MCPServerConfig], *, loop: BackgroundLoop | None = None) -> None:
        self.servers = dict(servers)
        self._loop = loop or background_loop()
        self.sessions: dict[str, MCPServerSession] = {}

    def load(self, specs: Sequence[str]) -> dict[str, list[BaseTool]]:
        """The tools of each `mcp:` spec; the servers named are started together, each once."""
        parsed = {spec: parse_spec(spec) for spec in specs}
        _require_adapters()
        names = list(dict.fromkeys(p.server for p in parsed.values()))
        unknown = [n for n in names if n not in self.servers]
        if unknown:
            declared = ", ".join(sorted(self.servers)) or "none"
            raise ConfigError(
                f"MCP server {unknown[0]!r} is not declared; add it under mcp_servers (declared: {declared})."
            )
        self._start([n for n in names if n not in self.sessions])
        return {spec: self._select(p) for spec, p in parsed.items()}

    def _start(self, names: list[str]) -> None:
        """Open the sessions of `names` concurrently; on any failure, close all of them."""
        started = {n: MCPServerSession(n, self.servers[n], self._loop) for n in names}
        try:
            pending = {n: s.begin() for n, s in started.items()}
            for name, ready in pending.items():
                started[name].finish(ready)
        except BaseException:
            for session in started.values():
                session.close()
            raise
        self.sessions.update(started)

    def _select(self, spec: MCPSpec) -> list[BaseTool]:
        session = self.sessions[spec.server]
        remote = session.tools
        if spec.tool is not None:
            remote = [t for t in remote if t.name == spec.tool]
            if not remote:
                listed = ", ".join(sorted(session._tools)) or "no tools"
                raise ConfigError(
                    f"MCP server {spec.server!r} has no tool {spec.tool!r}; it lists: {listed}."
                )
        prefix = f"{spec.server}_" if session.config.prefix else ""
        return [
            MCPTool(
                name=f"{prefix}{t.name}",
                description=t.description or f"The {t.name} tool of the MCP server {spec.server}.",
                args_schema=t.args_schema,
                server=spec.server,
                remote_name=t.name,
                session=session,
            )
            for t in remote
        ]

    def close(self) -> None:
        """Close every session this agent opened."""
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


_OPEN: weakref.WeakSet[MCPServerSession] = weakref.WeakSet()
"""Sessions not yet closed, closed at exit."""
_OPEN_LOCK = threading.Lock()


def load_mcp_tools(specs: Sequence[str], servers: Mapping[str, MCPServerConfig]) -> dict[str, list[BaseTool]]:
    """The tools of each `mcp:` spec, from the servers declared in the config (`AgentConfig.mcp_servers`)."""
    return MCPClients(servers).load(specs)


def close_mcp_tools(tools: Sequence[BaseTool]) -> None:
    """Close the MCP sessions behind any of `tools` (e.g. when the agent's build failed after they opened)."""
    for session in {id(t.session): t.session for t in tools if isinstance(t, MCPTool)}.values():
        session.close()


@atexit.register
def close_all() -> None:
    """Close every MCP session this process opened (run at exit)."""
    with _OPEN_LOCK:
        sessions = list(_OPEN)
    for session in sessions:
        session.close()
