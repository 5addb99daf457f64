"""A tiny MCP server for the MCP tool tests, run as its own process: `python mcp_demo_server.py stdio|http`.

    stdio                         speak MCP on stdin/stdout
    http [--path P] [--require-header NAME=ENVVAR]
                                  streamable HTTP on a free 127.0.0.1 port, printed as `PORT <n>` on
                                  stdout; requests whose header NAME is not the value of ENVVAR get a 401

Tools: `add(a, b)`, `shout(text)`, `fail(reason)` (raises), `slow(seconds)` (sleeps), `pid()`, `calls()`
(how many tool calls this process served: one process per session is what reuse looks like).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any

from mcp.server.fastmcp import FastMCP

server = FastMCP("demo", log_level="WARNING")
_calls = {"n": 0}


def _count() -> None:
    _calls["n"] += 1


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    _count()
    return a + b


@server.tool()
def shout(text: str) -> str:
    """The text in capitals."""
    _count()
    return text.upper()


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    _count()
    raise ValueError(f"refused: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer (without holding up other calls)."""
    _count()
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def pid() -> int:
    """This server's process id."""
    _count()
    return os.getpid()


@server.tool()
def calls() -> int:
    """How many tool calls this server process has served, this one included."""
    _count()
    return _calls["n"]


def _require_header(app: Any, name: str, expected: str) -> Any:
    """ASGI middleware: a 401 for any request whose header `name` is not `expected`."""
    wanted = name.lower().encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(wanted, b"").decode() != expected:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"missing or wrong credentials"})
                return
        await app(scope, receive, send)

    return guarded


def _serve_http(path: str, require: str | None) -> None:
    import uvicorn

    server.settings.streamable_http_path = path
    app: Any = server.streamable_http_app()
    if require:
        name, _, env = require.partition("=")
        app = _require_header(app, name, os.environ[env])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--path", default="/mcp")
    parser.add_argument("--require-header", default=None)
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run(transport="stdio")
    else:
        _serve_http(args.path, args.require_header)
    sys.exit(0)


if __name__ == "__main__":
    main()
