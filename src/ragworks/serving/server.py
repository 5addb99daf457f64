"""Run the app: `run_server` for `ragworks serve` (one process or `--workers N`); `serve_in_thread`."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from ragworks.agents.loading import load_agent
from ragworks.errors import ConfigError
from ragworks.serving._header_deadline import FOR_WORKERS, http_protocol
from ragworks.serving.app import SPEC_ENV, ServeSpec, build_app
from ragworks.serving.conversations import prepare_state
from ragworks.serving.limits import ServingLimits
from ragworks.serving.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from ragworks.trace_export.batch import prepare_tracking_store, setup_server_tracing

FACTORY = "ragworks.serving.app:create_app"


def run_server(
    spec: ServeSpec, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info"
) -> None:
    """Serve until interrupted; with several workers each process builds its own agent from `spec`.

    Raises:
        ConfigError: the port is taken or the host cannot be bound (checked before anything starts).
    """
    limits = ServingLimits(**spec.limits)
    connection_options = _connection_options(limits)
    if workers > 1:
        check_port(host, port)
        with _restored_environment(SPEC_ENV, MULTIPROC_ENV):  # set for the workers, not left behind
            os.environ[SPEC_ENV] = spec.to_json()  # uvicorn's worker processes inherit it
            prepare_multiprocess_dir()  # every worker's /metrics then answers the sum over all of them
            # Once, here: the workers would race to create a new database (and the experiment).
            prepare_tracking_store(experiment=spec.experiment)
            if spec.model_uri is None:
                prepare_state(spec.config)  # the conversation store's tables, once; unreachable: one line
            uvicorn.run(
                FACTORY,
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level=log_level,
                timeout_graceful_shutdown=5,
                **{**connection_options, "http": FOR_WORKERS},
            )
        return
    with bind_port(host, port) as sock:  # held from here: nothing can take the port while the agent loads
        agent = load_agent(config=spec.config, model_uri=spec.model_uri)
        setup_server_tracing(experiment=spec.experiment)
        app = build_app(agent, limits=limits)
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, **connection_options
        )
        uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def _restored_environment(*names: str) -> Iterator[None]:
    """Put these environment variables back as they were when the block ends, however it ends.

    A server started in-process (tests, notebooks) that fails or stops must not leave the workers'
    settings behind: a later app would read `PROMETHEUS_MULTIPROC_DIR` and count in another's files.
    """
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _connection_options(limits: ServingLimits) -> dict[str, Any]:
    """uvicorn's share of the limits: a header deadline, and a socket cap well above the app's own 503s."""
    return {
        # Headers get the body's deadline: uvicorn alone would wait for them forever.
        "http": http_protocol(limits.body_deadline_s),
        # A last guard on sockets only: the app answers 503 in OpenAI's shape long before this plain-text one.
        "limit_concurrency": 2 * (limits.body_readers + limits.max_concurrency),
    }


def check_port(host: str, port: int) -> None:
    """Fail with one line, before loading the agent or starting uvicorn, when `host:port` cannot be bound."""
    bind_port(host, port).close()


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` (not yet listening); ConfigError in one line when that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"Cannot listen on {host!r}: {exc.strerror}. Pass a valid --host.") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is free
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} on {host} is already in use: stop the process using it, or pass another --port."
            ) from None
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    return sock


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
