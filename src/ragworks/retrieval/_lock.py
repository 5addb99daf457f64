"""The writer lock of an index folder: `flock` on a lock file beside it, holding the writer's pid.

The kernel drops the lock when its holder exits, however it exits, so a killed writer never leaves
the folder locked. A second writer waits with a message, up to a timeout, then goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragworks.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 600.0
"""Seconds a writer waits for another writer of the same index before giving up."""
_POLL_SECONDS = 0.1

_held = threading.local()


def lock_path(folder: Path) -> Path:
    """The lock file beside the index folder."""
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def writer_lock(folder: Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[bool]:
    """Hold the index's writer lock; wait up to `timeout` seconds (with a message) for another writer.

    Re-entrant within a thread, so an ingest can hold it across load, update and save. Yields
    True where this call took the lock, False where the thread held it already.
    """
    key = str(lock_path(folder).absolute())
    depth: dict[str, int] = getattr(_held, "depth", None) or {}
    _held.depth = depth
    if depth.get(key):
        depth[key] += 1
        try:
            yield False
        finally:
            depth[key] -= 1
        return
    import fcntl  # POSIX; imported here so that the rest of the module imports everywhere

    path = Path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, folder, timeout, fcntl)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        depth[key] = 1
        try:
            yield True
        finally:
            depth[key] = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, folder: Path, timeout: float, fcntl: Any) -> None:  # Any: the module
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    holder = _holder(path)
    logger.warning(
        "Another ingest%s is writing %s; waiting up to %.0f s for it to finish (--lock-timeout).",
        f" (pid {holder})" if holder else "",
        folder,
        timeout,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"{folder} is still being written by another ingest"
                    f"{f' (pid {holder})' if holder else ''} after {timeout:.0f} s (lock {path}). "
                    "Wait for it to finish, or give a longer --lock-timeout."
                ) from None
            time.sleep(_POLL_SECONDS)


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
