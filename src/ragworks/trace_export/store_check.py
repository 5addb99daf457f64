"""Checking at startup, in seconds, that the tracking store can take traces.

MLflow opens a database store with up to 15 attempts and exponential waits (about an hour in all
for a database that is down), so a server started against an unreachable store used to keep its
port closed for minutes. `check_tracking_store` answers first, within `timeout` seconds, with one
line that says what is wrong and how to fix it: a closed port, an unknown host, a missing driver,
a SQLite file in a directory that cannot be created or written.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path

from ragworks.errors import ConfigError

CHECK_TIMEOUT = 3.0
"""Seconds a database store gets to answer at startup."""
DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_FIX = (
    "Start the store, or set MLFLOW_TRACKING_URI to one that is, "
    "or MLFLOW_TRACE_SAMPLING_RATIO=0 to serve untraced."
)


def scheme(uri: str) -> str:
    """The database dialect of a tracking URI ('sqlite', 'postgresql', ...; 'http' for a server)."""
    return uri.split(":", 1)[0].split("+", 1)[0]


def check_tracking_store(uri: str, *, timeout: float = CHECK_TIMEOUT) -> None:
    """Raise `ConfigError` (one line) unless the database store at `uri` is usable; else no-op."""
    kind = scheme(uri)
    if kind == "sqlite":
        _check_sqlite(uri)
    elif kind in DATABASE_SCHEMES:
        _check_server(uri, kind, timeout)


def _check_sqlite(uri: str) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        return
    path = Path(database)
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"The SQLite tracking store {uri} cannot be written ({existing} is a file, not a folder). "
            f"Point MLFLOW_TRACKING_URI at a writable folder, or set MLFLOW_TRACE_SAMPLING_RATIO=0."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opening for writing is the test: permissions (root ignores them), a read-only or
        # immutable file system, a path through a regular file all fail here, with their reason.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        where = exc.filename or path
        raise ConfigError(
            f"The SQLite tracking store {uri} cannot be written ({reason}: {where}). "
            f"Point MLFLOW_TRACKING_URI at a writable folder, or set MLFLOW_TRACE_SAMPLING_RATIO=0."
        ) from None
    for suffix in ("-wal", "-shm"):  # WAL's files must be writable too, or writes crash (SIGBUS)
        extra = Path(f"{path}{suffix}")
        if extra.exists() and not _writable(extra):
            raise ConfigError(
                f"The SQLite tracking store {uri} has a read-only {extra.name}; make it writable "
                "or remove it while no process uses the store."
            )


def _writable(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError:
        return False
    return True


def _check_server(uri: str, kind: str, timeout: float) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    host, port = url.host or "localhost", url.port or _DEFAULT_PORTS.get(kind, 0)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "connection refused" if exc.errno == errno.ECONNREFUSED else (exc.strerror or str(exc))
        raise ConfigError(
            f"The tracking store {url.render_as_string(hide_password=True)} is unreachable "
            f"({reason} at {host}:{port}). {_FIX}"
        ) from None
    _check_login(uri, url.render_as_string(hide_password=True), timeout)


def _check_login(uri: str, shown: str, timeout: float) -> None:
    """One connection attempt with the store's driver, bounded by `timeout` (bad login, no driver)."""
    import sqlalchemy

    errors: list[str] = []

    def attempt() -> None:
        try:
            engine = sqlalchemy.create_engine(uri, pool_pre_ping=False)
            with engine.connect():
                pass
            engine.dispose()
        except ModuleNotFoundError as exc:
            errors.append(f"its driver is not installed ({exc.name}); pip install it")
        except Exception as exc:
            errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    thread = threading.Thread(target=attempt, daemon=True, name="ragworks-store-check")
    thread.start()
    thread.join(timeout * 2)
    if thread.is_alive():
        errors.append(f"no answer in {timeout * 2:.0f} s")
    if errors:
        raise ConfigError(f"The tracking store {shown} cannot be used: {errors[0]}. {_FIX}")
