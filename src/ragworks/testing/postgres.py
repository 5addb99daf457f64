"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks, from the system's binaries.

`initdb` and `pg_ctl` are found on PATH or in Debian's `/usr/lib/postgresql/<version>/bin`. PostgreSQL
refuses to run as root, so as root the cluster runs as the `postgres` user (or `nobody`) through
`runuser`, in a folder that user owns. `postgres_unavailable()` says why a cluster cannot start here.

Example:
    >>> with postgres_cluster() as url:                     # doctest: +SKIP
    ...     store = open_state(url)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_USERS = ("postgres", "nobody")


def postgres_bin() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _run_as() -> str | None:
    """The user to run the cluster as (None: the current user, when it is not root)."""
    if os.geteuid() != 0:
        return None
    for name in _USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return ""


def postgres_unavailable() -> str | None:
    """Why a throwaway cluster cannot start on this machine, or None when it can."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)"
    user = _run_as()
    if user == "":
        return "running as root with no 'postgres' or 'nobody' user to run PostgreSQL as"
    if user and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_cluster(*, database: str = "ragworks") -> Iterator[str]:
    """Start a fresh cluster in a temporary folder; yield its `postgresql://` URL; stop and remove it."""
    reason = postgres_unavailable()
    if reason:
        raise RuntimeError(reason)
    bin_dir = postgres_bin()
    assert bin_dir is not None
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="ragworks-pg-"))
    data, port = root / "data", _free_port()
    prefix = ["runuser", "-u", user, "--"] if user else []
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    role = "ragworks"

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", role, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", role, database)
            yield f"postgresql://{role}@127.0.0.1:{port}/{database}"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
