"""The conversation store: a LangGraph checkpointer for the threads, and a table of stored responses.

    serving.state: auto                        SQLite in `ragworks-state/` beside the MLflow tracking store
    serving.state: ./state/conversations.db    SQLite at that path (or sqlite:///path)
    serving.state: postgresql://user@host/db   PostgreSQL (`langgraph-checkpoint-postgres`): many servers
    serving.state: off                          no conversations: every request carries its whole history

The threads are LangGraph's (`SqliteSaver` / `PostgresSaver`, tables created by their `setup()`); beside
them, in the same database, `ragworks_responses` maps each stored response id to its thread, the checkpoint
its run ended on, its trace id and its body. Retention (`serving.max_age_days`, `serving.max_responses`)
is enforced by a sweep every `SWEEP_EVERY` stored responses or `SWEEP_INTERVAL_S` seconds, each bounded
to `SWEEP_BATCH` rows over indexed columns (no full scan per request); a response past its age is refused
at once, before any sweep. A thread's checkpoints go with its last response.

Public methods other parts of the server use through `app.state.ragworks.state` (None when state is off):
    `trace_id_for_response(response_id) -> str | None`   the trace of a stored response (for feedback)
    `count_conversations() -> int`, `count_responses() -> int`   cheap counts (cached a few seconds; metrics)

Example:
    >>> store = open_state("auto", retention=Retention())                   # doctest: +SKIP
    >>> store.get("resp_123").thread_id                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

from ragworks.agents._thread import RESPONSE_METADATA_KEY, UNKEPT_CHANNELS
from ragworks.errors import ConfigError
from ragworks.serving.errors import HTTPProblem

logger = logging.getLogger(__name__)

SETTING = "serving.state"
"""The config field that names the store (for messages)."""
STATE_DIR = "ragworks-state"
"""The folder beside the tracking store that holds the default SQLite database."""
SWEEP_EVERY = 64
SWEEP_INTERVAL_S = 60.0
SWEEP_BATCH = 500
COUNT_TTL_S = 5.0
_TABLE = "ragworks_responses"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, "
    "checkpoint_id TEXT, trace_id TEXT, created_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_created ON {_TABLE} (created_at)",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_thread ON {_TABLE} (thread_id)",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How long and how many stored responses are kept."""

    max_age_s: float = 30 * 86400.0
    """Responses older than this are refused and swept."""
    max_responses: int = 100_000
    """The oldest responses beyond this many are swept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResponse:
    """One stored response: where its conversation continues from, its trace, and its body."""

    id: str
    thread_id: str
    checkpoint_id: str | None
    trace_id: str | None
    created_at: float
    body: dict[str, Any] = field(default_factory=dict)
    """The Responses body as the client received it."""


class _RecordsEnds:
    """Mixin for a checkpointer: remember the checkpoint each response's run ended on, as it is written.

    Saves the server reading the checkpoint back (and deserialising the conversation) to find it.
    """

    _ENDS_KEPT = 4096
    _ends: OrderedDict[str, str]
    _faults: tuple[type[BaseException], ...] = ()
    """The backend's own errors, answered as `StateUnavailable` (503) while serving."""
    _where = ""

    def get_tuple(self, config: Any) -> Any:
        """The saver's own `get_tuple`; its backend's errors become `StateUnavailable`."""
        try:
            return super().get_tuple(config)  # type: ignore[misc]
        except self._faults as exc:
            raise unavailable(self._where, exc) from exc

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        """The saver's own `put_writes`; its backend's errors become `StateUnavailable`."""
        try:
            super().put_writes(config, writes, task_id, task_path)  # type: ignore[misc]
        except self._faults as exc:
            raise unavailable(self._where, exc) from exc

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        """Write the checkpoint (the saver's own `put`), noting its id under the response's id."""
        # Any: BaseCheckpointSaver.put's own types, passed through unchanged
        values = checkpoint.get("channel_values") or {}
        if UNKEPT_CHANNELS & values.keys():  # most of a RAG turn's checkpoint is its retrieved chunks
            kept = {name: value for name, value in values.items() if name not in UNKEPT_CHANNELS}
            checkpoint = {**checkpoint, "channel_values": kept}
        try:
            saved = super().put(config, checkpoint, metadata, new_versions)  # type: ignore[misc]
        except self._faults as exc:
            raise unavailable(self._where, exc) from exc
        # LangGraph passes the run's metadata in `config`; the saver merges it into what it stores, so
        # the response id is in `metadata` only with some releases.
        response_id = (metadata or {}).get(RESPONSE_METADATA_KEY) or (config.get("metadata") or {}).get(
            RESPONSE_METADATA_KEY
        )
        if response_id:
            with self.__dict__.setdefault("_ends_lock", threading.Lock()):
                ends = self.__dict__.setdefault("_ends", OrderedDict())
                ends[response_id] = str(saved["configurable"]["checkpoint_id"])
                while len(ends) > self._ENDS_KEPT:  # runs whose answers were never stored
                    ends.popitem(last=False)
        return saved

    def ended(self, response_id: str) -> str | None:
        """The checkpoint id `response_id`'s run ended on, once (None when not seen here)."""
        with self.__dict__.setdefault("_ends_lock", threading.Lock()):
            return self.__dict__.get("_ends", {}).pop(response_id, None)


def unavailable(where: str, exc: BaseException) -> HTTPProblem:
    """The 503 a request gets when the conversation store fails while serving."""
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return HTTPProblem(
        503,
        f"The conversation store {SETTING}={where} is unavailable ({type(exc).__name__}: {detail}). "
        "Retry later, or send the whole conversation with \"store\": false.",
        code="state_unavailable",
        headers={"Retry-After": "5"},
    )


class _Database:
    """Our table's SQL on either backend: `?` placeholders, rows as tuples; backend errors are 503s."""

    def __init__(
        self,
        run: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]],
        close: Callable[[], None],
        *,
        faults: tuple[type[BaseException], ...],
        where: str,
    ):
        self._run, self.close, self._faults, self._where = run, close, faults, where

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for writes)."""
        try:
            return self._run(sql, params)
        except self._faults as exc:
            raise unavailable(self._where, exc) from exc


class ConversationStore:
    """Stored responses and the checkpointer of their threads (module doc)."""

    def __init__(
        self, *, checkpointer: BaseCheckpointSaver[Any], db: _Database, where: str, retention: Retention
    ) -> None:
        self.checkpointer = checkpointer
        self.where = where
        """The store, for messages (a PostgreSQL URL without its password)."""
        self.retention = retention
        self._db = db
        self._lock = threading.Lock()
        self._puts_since_sweep = 0
        self._last_sweep = time.monotonic()
        self._counts: dict[str, tuple[float, int]] = {}
        for statement in _SCHEMA:
            db.query(statement)

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response `response_id`; None when unknown, deleted or past its age."""
        rows = self._db.query(
            f"SELECT thread_id, checkpoint_id, trace_id, created_at, body FROM {_TABLE} WHERE id = ?",
            (response_id,),
        )
        if not rows:
            return None
        thread_id, checkpoint_id, trace_id, created_at, body = rows[0]
        if created_at < time.time() - self.retention.max_age_s:
            return None
        return StoredResponse(
            id=response_id,
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            trace_id=trace_id,
            created_at=created_at,
            body=json.loads(body),
        )

    def trace_id_for_response(self, response_id: str) -> str | None:
        """The trace id of a stored response (None when unknown, expired, or not traced)."""
        stored = self.get(response_id)
        return stored.trace_id if stored else None

    def checkpoint_of(self, thread_id: str, response_id: str) -> str | None:
        """The checkpoint the run of `response_id` ended on (the thread's latest, unless a run followed)."""
        ended = getattr(self.checkpointer, "ended", None)
        seen = ended(response_id) if ended is not None else None
        if seen is not None:
            return str(seen)
        config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        latest = self.checkpointer.get_tuple(config)
        if latest is not None and latest.metadata.get(RESPONSE_METADATA_KEY) == response_id:
            return str(latest.config["configurable"]["checkpoint_id"])
        found = next(
            iter(self.checkpointer.list(config, filter={RESPONSE_METADATA_KEY: response_id}, limit=1)), None
        )
        return str(found.config["configurable"]["checkpoint_id"]) if found else None

    def put(self, stored: StoredResponse) -> None:
        """Store a response (and sweep old ones now and then)."""
        self._db.query(
            f"INSERT INTO {_TABLE} (id, thread_id, checkpoint_id, trace_id, created_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                stored.id,
                stored.thread_id,
                stored.checkpoint_id,
                stored.trace_id,
                stored.created_at,
                json.dumps(stored.body, default=str),  # model_dump in python mode may hold a datetime
            ),
        )
        with self._lock:
            self._puts_since_sweep += 1
            due = (
                self._puts_since_sweep >= SWEEP_EVERY
                or time.monotonic() - self._last_sweep > SWEEP_INTERVAL_S
            )
            if due:
                self._puts_since_sweep, self._last_sweep = 0, time.monotonic()
        if due:
            self.sweep()

    def delete(self, response_id: str) -> bool:
        """Remove a stored response (and its thread once no response of it is left); False when unknown."""
        rows = self._db.query(f"SELECT thread_id FROM {_TABLE} WHERE id = ?", (response_id,))
        if not rows:
            return False
        self._remove([(response_id, rows[0][0])])
        return True

    def sweep(self) -> int:
        """Remove responses past the age or beyond the count (at most `SWEEP_BATCH`); how many went."""
        cutoff = time.time() - self.retention.max_age_s
        old = self._db.query(
            f"SELECT id, thread_id FROM {_TABLE} WHERE created_at < ? ORDER BY created_at LIMIT ?",
            (cutoff, SWEEP_BATCH),
        )
        (total,) = self._db.query(f"SELECT COUNT(*) FROM {_TABLE}")[0]
        excess = min(int(total) - len(old) - self.retention.max_responses, SWEEP_BATCH - len(old))
        if excess > 0:
            old = self._db.query(
                f"SELECT id, thread_id FROM {_TABLE} ORDER BY created_at LIMIT ?", (len(old) + excess,)
            )
        if old:
            self._remove([(str(i), str(t)) for i, t in old])
            logger.info("Conversation store: swept %d responses past retention", len(old))
        return len(old)

    def _remove(self, rows: list[tuple[str, str]]) -> None:
        for start in range(0, len(rows), 100):
            ids = [i for i, _ in rows[start : start + 100]]
            self._db.query(f"DELETE FROM {_TABLE} WHERE id IN ({', '.join('?' * len(ids))})", ids)
        for thread_id in {t for _, t in rows}:
            if not self._db.query(f"SELECT 1 FROM {_TABLE} WHERE thread_id = ? LIMIT 1", (thread_id,)):
                self.checkpointer.delete_thread(thread_id)
        self._counts.clear()

    def count_responses(self) -> int:
        """Stored responses (cached for `COUNT_TTL_S` seconds)."""
        return self._count("responses", f"SELECT COUNT(*) FROM {_TABLE}")

    def count_conversations(self) -> int:
        """Conversations (threads) with a stored response (cached for `COUNT_TTL_S` seconds)."""
        return self._count("conversations", f"SELECT COUNT(DISTINCT thread_id) FROM {_TABLE}")

    def _count(self, name: str, sql: str) -> int:
        now = time.monotonic()
        cached = self._counts.get(name)
        if cached and now - cached[0] < COUNT_TTL_S:
            return cached[1]
        value = int(self._db.query(sql)[0][0])
        self._counts[name] = (now, value)
        return value

    def close(self) -> None:
        """Close the database connections."""
        self._db.close()


def open_state(setting: str | None, *, retention: Retention | None = None) -> ConversationStore | None:
    """Open the store `setting` names (module doc); None for `off`.

    Raises:
        ConfigError: in one line naming `serving.state`, when the store cannot be opened or reached.
    """
    value = (setting or "auto").strip()
    if value.lower() in ("off", "none", "false", ""):
        return None
    retention = retention or Retention()
    if value.startswith(("postgresql://", "postgres://")):
        return _open_postgres(value, retention)
    return _open_sqlite(_sqlite_path(value), retention)


def default_state_path() -> Path:
    """The default SQLite file: `ragworks-state/conversations.db` beside the tracking store."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    parsed = urlsplit(uri)
    if parsed.scheme == "sqlite":
        base = Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent
    elif parsed.scheme in ("", "file"):
        base = Path(parsed.path if parsed.scheme else uri).expanduser().resolve().parent
    else:  # a tracking server: the state stays on this machine, in the working directory
        base = Path.cwd()
    return base / STATE_DIR / "conversations.db"


def _sqlite_path(value: str) -> Path:
    if value == "auto":
        return default_state_path()
    return Path(value.removeprefix("sqlite:///")).expanduser()


def _open_sqlite(path: Path, retention: Retention) -> ConversationStore:
    from langgraph.checkpoint.sqlite import SqliteSaver

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        saver_conn = _sqlite_connect(path)
        faults: dict[str, Any] = {"_faults": (sqlite3.Error,), "_where": str(path)}
        saver = type("RecordingSqliteSaver", (_RecordsEnds, SqliteSaver), faults)(saver_conn)
        saver.setup()
        ours = _sqlite_connect(path, autocommit=True)
    except (OSError, sqlite3.Error) as exc:
        raise _unreachable(str(path), exc) from None
    lock = threading.Lock()

    def run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with lock:
            return ours.execute(sql, tuple(params)).fetchall()

    def close() -> None:
        ours.close()
        saver_conn.close()

    db = _Database(run, close, faults=(sqlite3.Error,), where=str(path))
    return ConversationStore(checkpointer=saver, db=db, where=str(path), retention=retention)


def _sqlite_connect(path: Path, *, autocommit: bool = False) -> sqlite3.Connection:
    # One connection shared by the server's threads: SqliteSaver serialises it with its own lock, ours too.
    conn = sqlite3.connect(
        path, check_same_thread=False, timeout=10, isolation_level=None if autocommit else "DEFERRED"
    )
    conn.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: safe against a process crash, one fsync per checkpoint
    return conn


def _open_postgres(url: str, retention: Retention) -> ConversationStore:
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import tuple_row
        from psycopg_pool import ConnectionPool, PoolTimeout
    except ImportError:
        raise ConfigError(
            f"{SETTING} names PostgreSQL, but langgraph-checkpoint-postgres is not installed: "
            "pip install 'ragworks[postgres]'."
        ) from None
    where = _redacted(url)
    kwargs = {"autocommit": True, "prepare_threshold": 0, "connect_timeout": 5}
    pool: Any = ConnectionPool(url, min_size=1, max_size=16, kwargs=kwargs, open=False)
    try:
        psycopg.connect(url, connect_timeout=5).close()  # one attempt first: a clear error, not pool retries
        pool.open(wait=True, timeout=10)
        faults = {"_faults": (psycopg.Error, PoolTimeout), "_where": where}
        saver = type("RecordingPostgresSaver", (_RecordsEnds, PostgresSaver), faults)(pool)
        saver.setup()
    except Exception as exc:  # psycopg's and the pool's errors alike: unreachable, refused, bad login
        pool.close()
        raise _unreachable(where, exc) from None

    def run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(sql.replace("?", "%s"), tuple(params))
            return cur.fetchall() if cur.description else []

    db = _Database(run, pool.close, faults=(psycopg.Error, PoolTimeout), where=where)
    return ConversationStore(checkpointer=saver, db=db, where=where, retention=retention)


def _redacted(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _unreachable(where: str, exc: BaseException) -> ConfigError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return ConfigError(
        f"The conversation store {SETTING}={where} cannot be opened: {detail[:300]}. Start the database or "
        f"fix {SETTING} in the agent config (a SQLite path, postgresql://..., or off)."
    )
