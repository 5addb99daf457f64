"""Shared test setup: no test reaches the network, and MLflow writes only to a temp folder.

The autouse `_no_network` guard refuses socket connections and DNS lookups to anything but the
loopback interface (the emulators and stub servers run on 127.0.0.1), and fails the test even when
the code under test swallows the error, e.g. inside the `openai` client's retry loop. Tests marked
`live` are exempt.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# Before MLflow is imported: no telemetry thread, and no mlflow.db in the working directory.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
_WORK_DIR = tempfile.mkdtemp(prefix="ragworks-tests-")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_WORK_DIR}/mlflow.db")

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", socket.gethostname()}


@pytest.fixture(scope="session", autouse=True)
def _run_in_temp_dir() -> Iterator[None]:
    """Run the tests from the temp folder: with a SQLite store MLflow puts artifacts (logged models,
    eval reports) under ./mlruns, which must not land in the checkout."""
    before = os.getcwd()
    os.chdir(_WORK_DIR)
    try:
        yield
    finally:
        os.chdir(before)


class NetworkBlockedError(RuntimeError):
    """A test tried to reach a host other than 127.0.0.1."""


def _is_local(host: Any) -> bool:
    # Any: socket addresses are tuples whose first item is a str or bytes host
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str) or host in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any test that opens a connection to, or resolves, a non-loopback host.

    Yields the list of blocked attempts; a test of the guard itself may inspect and clear it.
    """
    if request.node.get_closest_marker("live"):
        yield []
        return
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            attempts.append(f"connect {address!r}")
            raise NetworkBlockedError(f"Tests may not reach {address!r}; use a stub on 127.0.0.1.")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_local(host):
            attempts.append(f"resolve {host!r}")
            raise NetworkBlockedError(f"Tests may not resolve {host!r}; use a stub on 127.0.0.1.")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    if attempts:
        pytest.fail(f"The test tried to use the network: {', '.join(attempts)}", pytrace=False)


@contextmanager
def _active_experiment_restored() -> Iterator[None]:
    """Undo `mlflow.set_experiment` at the end of the block.

    It leaves a process-wide active experiment (and MLFLOW_EXPERIMENT_ID) behind; a later test with
    another tracking store would then log its traces to an experiment id that store does not have.
    """
    import mlflow.tracking.fluent as fluent

    saved_id, saved_env = fluent._active_experiment_id, os.environ.get("MLFLOW_EXPERIMENT_ID")
    yield
    fluent._active_experiment_id = saved_id
    if saved_env is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = saved_env


@pytest.fixture(autouse=True)
def _restore_active_experiment() -> Iterator[None]:
    """Each test leaves the active experiment as it found it."""
    with _active_experiment_restored():
        yield


@pytest.fixture(scope="module", autouse=True)
def _restore_module_experiment() -> Iterator[None]:
    """Each module too: module-scoped fixtures (a served app's store) set it before any test runs."""
    with _active_experiment_restored():
        yield


@pytest.fixture
def tracing_off() -> Iterator[None]:
    """Run a test with MLflow tracing disabled (its first use costs seconds: it sets up the store)."""
    import mlflow

    mlflow.tracing.disable()
    yield
    mlflow.tracing.reset()  # tracing comes back, set up lazily on the next traced call


DOCS = {
    "index.md": (
        "# The index\n"
        "Ragworks stores the index in a folder on disk. "
        "The folder holds JSON and numpy files, never pickle.\n"
        "The index combines BM25 and dense vectors with reciprocal rank fusion.\n"
    ),
    "agents.md": (
        "# Logging agents\n"
        "MLflow logs agents as models from code. The agent code is saved together with its configuration.\n"
        "A logged agent can be loaded back with mlflow.pyfunc.load_model.\n\n"
        "# Tracing\n"
        "Every request produces a trace. Traces contain spans for retrieval and model calls.\n"
    ),
}


@pytest.fixture(scope="session")
def docs_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny local index (hashing embeddings) over two short markdown files; returns its folder."""
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("ragworks-docs")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    ingest([docs], root / "index", embeddings="hashing")
    return str(root / "index")


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session (local[2]) shared by every test that needs Spark; skipped without pyspark."""
    pytest.importorskip("pyspark")
    from ragworks.scale.spark_session import spark_session

    session = spark_session("local[2]", app_name="ragworks-tests")
    try:
        yield session
    finally:
        session.stop()
