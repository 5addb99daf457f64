"""A SQLite cache of judge replies, keyed by model + prompt version + inputs, so re-runs cost nothing."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ragworks.config import env_flag

DEFAULT_PATH = Path(".ragworks") / "judge-cache.sqlite"


def default_cache_path() -> Path:
    """RAGWORKS_JUDGE_CACHE, else `.ragworks/judge-cache.sqlite` in the working directory."""
    return Path(env_flag("RAGWORKS_JUDGE_CACHE") or DEFAULT_PATH)


def cache_key(model: str, prompt_id: str, version: int, payload: Any) -> str:
    """A stable hash of what decides a judge reply (Any: any JSON-serialisable payload)."""
    blob = json.dumps([model, prompt_id, version, payload], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def repeat_key(key: str, repeat: int) -> str:
    """The key of the `repeat`-th judging of the same inputs (0 keeps `key`): each repeat is asked anew."""
    return key if repeat == 0 else hashlib.sha256(f"{key}:repeat={repeat}".encode()).hexdigest()


class JudgeCache:
    """Thread-safe get/put of JSON replies in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, prompt TEXT, "
                "reply TEXT NOT NULL, created TEXT DEFAULT CURRENT_TIMESTAMP)"
            )

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached reply for a key, or None (Any: JSON values)."""
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, reply: dict[str, Any], *, model: str = "", prompt: str = "") -> None:
        """Store a reply (Any: JSON values)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, model, prompt, reply) VALUES (?, ?, ?, ?)",
                (key, model, prompt, json.dumps(reply, ensure_ascii=False)),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
