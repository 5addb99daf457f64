"""The loopback HTTP server under every emulator: a free 127.0.0.1 port, a daemon thread, `with`."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, TypeVar

_S = TypeVar("_S", bound="LoopbackServer")


class LoopbackServer:
    """Serve `handler_class()` on 127.0.0.1 from a background thread; `start()`/`stop()` or `with`."""

    thread_name: ClassVar[str] = "loopback-server"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class, bound to this server's state."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The port it listens on; RuntimeError before `start()`."""
        if self._server is None:
            raise RuntimeError(
                f"{type(self).__name__} is not running; use it as a context manager or start()."
            )
        return int(self._server.server_address[1])

    def start(self: _S) -> _S:
        """Listen on a free port of 127.0.0.1."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self._server.daemon_threads = True
        thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
