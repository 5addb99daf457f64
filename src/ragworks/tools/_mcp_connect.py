"""How to reach one configured MCP server: the langchain-mcp-adapters connection it becomes.

`${VAR}` in a header or env value is read from the environment here, when the server is started; the
config keeps the `${VAR}` text, so no secret is stored in it, in a logged model, or in a trace. A
Databricks managed MCP server (`databricks: genie/<space_id>`) becomes the workspace URL
`<host>/api/2.0/mcp/genie/<space_id>` with databricks-sdk's unified auth on every request.

`open_session` opens HTTP sessions through the adapters' `create_session`, and stdio sessions on the
`mcp` client directly, with the server's output relayed, so that a server process that exits is
noticed at once (`on_closed`) instead of at the next call's timeout.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ragworks.config import MCPServerConfig, env_flag
from ragworks.errors import ConfigError

_VAR = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_WORDS = ("authorization", "token", "key", "secret", "password", "cookie", "credential")
"""Header and env names whose values must come from the environment (`${VAR}`), not the config text."""
_DATABRICKS_PATH = re.compile(
    r"^(?:(?:vector-search|functions)/[A-Za-z0-9_\-]+/[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)?|genie/[A-Za-z0-9_\-]+)$"
)
HTTP_CONNECT_TIMEOUT_S = 10.0
"""Connecting, writing and waiting for a pooled connection; reading is bounded by the call's timeout."""


def expand(value: str, *, where: str) -> str:
    """`value` with each `${VAR}` replaced by the environment variable's value; a missing one is an error."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if not _NAME.match(name):
            raise ConfigError(f"{where} has ${{{name}}}, which is not an environment variable name.")
        found = env_flag(name)
        if found is None:
            raise ConfigError(f"{where} reads the environment variable {name}, which is not set: set it.")
        return found

    return _VAR.sub(lookup, value)


def _expanded(values: Mapping[str, str], *, server: str, field: str) -> dict[str, str]:
    """Expand every value, refusing secrets written into the config itself."""
    resolved: dict[str, str] = {}
    for name, value in values.items():
        where = f"mcp_servers.{server}.{field}.{name}"
        if any(word in name.lower() for word in _SECRET_WORDS) and not _VAR.search(value):
            raise ConfigError(
                f"{where} looks like a secret written into the config: put it in an environment "
                f"variable and write {field}.{name}: ${{ENV_VAR}} (e.g. 'Bearer ${{MY_TOKEN}}')."
            )
        resolved[name] = expand(value, where=where)
    return resolved


def describe(config: MCPServerConfig) -> str:
    """Where the server is, for messages and logs (no header or env values)."""
    if config.command:
        return "command " + shlex.join(_command(config))
    if config.databricks:
        return f"Databricks managed MCP server {config.databricks}"
    return f"{config.transport or 'streamable_http'} {safe_url(str(config.url))}"


def safe_url(url: str) -> str:
    """`url` without its user:password and query, which may hold credentials, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _command(config: MCPServerConfig) -> list[str]:
    program = [config.command] if isinstance(config.command, str) else list(config.command or [])
    return [*program, *config.args]


def connection(name: str, config: MCPServerConfig) -> dict[str, Any]:
    """The adapters' connection dict for a server (Any: a TypedDict union of the adapters' transports)."""
    session = {"read_timeout_seconds": timedelta(seconds=config.timeout_s)}
    if config.command:
        command = _command(config)
        env = _expanded(config.env, server=name, field="env") if config.env is not None else None
        return {
            "transport": "stdio",
            "command": command[0],
            "args": command[1:],
            "env": env,
            "cwd": config.cwd,
            "session_kwargs": session,
        }
    http: dict[str, Any] = {
        "transport": config.transport or "streamable_http",
        "timeout": min(HTTP_CONNECT_TIMEOUT_S, config.timeout_s),
        "sse_read_timeout": config.timeout_s,
        "session_kwargs": session,
    }
    if config.databricks:
        workspace = workspace_config()
        http["url"] = databricks_url(config.databricks, host=str(workspace.host))
        http["auth"] = WorkspaceAuth(workspace)
    else:
        url = str(config.url)
        if urlsplit(url).password and not _VAR.search(url):
            raise ConfigError(
                f"mcp_servers.{name}.url holds a password: put the credential in an environment variable "
                "and send it as a header (headers: {Authorization: 'Bearer ${MY_TOKEN}'})."
            )
        http["url"] = expand(url, where=f"mcp_servers.{name}.url")
    headers = _expanded(config.headers, server=name, field="headers")
    if headers:
        http["headers"] = headers
    return http


def databricks_url(path: str, *, host: str) -> str:
    """The managed MCP server URL of a workspace: `<host>/api/2.0/mcp/<path>`."""
    clean = path.strip("/")
    if not _DATABRICKS_PATH.match(clean):
        raise ConfigError(
            f"databricks: {path!r} names no managed MCP server; write vector-search/<catalog>/<schema>, "
            "functions/<catalog>/<schema> (optionally /<index> or /<function>), or genie/<space_id>."
        )
    return f"{host.rstrip('/')}/api/2.0/mcp/{clean}"


def workspace_config() -> Any:
    """databricks-sdk's `Config` from the unified auth (Any: the SDK is an optional extra)."""
    try:
        from databricks.sdk.core import Config
    except ImportError:
        raise ConfigError(
            "Databricks managed MCP servers need databricks-sdk: pip install 'ragworks[databricks]'"
        ) from None
    try:
        return Config()
    except Exception as exc:  # the SDK's errors carry its own advice, never the secret
        raise ConfigError(
            f"Databricks authentication is not configured for a managed MCP server ({exc}); set "
            "DATABRICKS_HOST and DATABRICKS_TOKEN, or a service principal's credentials."
        ) from None


class WorkspaceAuth(httpx.Auth):
    """Workspace credentials on every request (`Config.authenticate()` refreshes OAuth tokens itself)."""

    def __init__(self, workspace: Any) -> None:  # Any: databricks.sdk.core.Config
        self._workspace = workspace

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the workspace's auth headers, then send."""
        request.headers.update(self._workspace.authenticate())
        yield request


@asynccontextmanager
async def open_session(conn: dict[str, Any], *, on_closed: Callable[[], None]) -> AsyncIterator[Any]:
    """An open `mcp.ClientSession` for a connection (Any: the mcp extra is optional), not yet initialized.

    `on_closed` is called when a stdio server's output ends (the process exited): calls waiting for an
    answer then fail at once, as the session's read stream closes.
    """
    if conn["transport"] != "stdio":
        from langchain_mcp_adapters.sessions import create_session

        async with create_session(conn) as session:  # type: ignore[arg-type]
            yield session
        return
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=conn["command"], args=conn["args"], env=conn["env"], cwd=conn["cwd"]
    )
    async with stdio_client(params) as (read, write):
        relay_send, relay_read = anyio.create_memory_object_stream[Any](0)

        async def relay() -> None:
            async with relay_send:
                async for message in read:
                    await relay_send.send(message)
            on_closed()

        async with anyio.create_task_group() as group:
            group.start_soon(relay)
            async with ClientSession(relay_read, write, **conn["session_kwargs"]) as session:
                yield session
            group.cancel_scope.cancel()
