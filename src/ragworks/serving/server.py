"""Run the app: `run_server` for `ragworks serve` (one process or `--workers N`); `serve_in_thread`."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from ragworks.serving.app import SPEC_ENV, ServeSpec, build_app, load_agent
from ragworks.serving.limits import ServingLimits
from ragworks.trace_export.batch import prepare_tracking_store, setup_server_tracing

FACTORY = "ragworks.serving.app:create_app"


def run_server(
    spec: ServeSpec, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info"
) -> None:
    """Serve until interrupted; with several workers each process builds its own agent from `spec`."""
    if workers > 1:
        os.environ[SPEC_ENV] = spec.to_json()  # uvicorn's worker processes inherit it
        prepare_tracking_store()  # once, here: the workers would race to create a new database
        uvicorn.run(
            FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            timeout_graceful_shutdown=5,
        )
        return
    agent = load_agent(config=spec.config, model_uri=spec.model_uri)  # fails before binding the port
    setup_server_tracing()
    app = build_app(agent, limits=ServingLimits(**spec.limits))
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


@contextmanager
def serve_in_thread(app: FastAPI, *, host: str = "127.0.0.1", log_level: str = "warning") -> Iterator[str]:
    """Run `app` on a free port in a background thread; yield its base URL, stop it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )  # inherited by accepted sockets: no Nagle delay
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The test server did not start; see the log above.")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
