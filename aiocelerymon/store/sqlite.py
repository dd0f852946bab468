"""The embedded store: one SQLite file (aiosqlite: the driver runs in its own thread).

WAL journal (readers never wait for the writer), ``synchronous=NORMAL`` (a power cut may lose
the last batch, never corrupt the file), foreign keys on (a task's events go with it). Search
is an FTS5 table with the trigram tokenizer: it finds any substring of three characters or
more, case-insensitively, which is exactly Flower's search semantics, with an index.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aiocelerymon._sqlite import open_sqlite
from aiocelerymon.store._base import SEARCH_COLUMNS
from aiocelerymon.store._sql import SQLStore, escape_like

__all__ = ["SQLiteStore"]

_FTS_COLUMNS = ", ".join(SEARCH_COLUMNS)
_FTS_VALUES = ", ".join("?" * len(SEARCH_COLUMNS))
#: Where each search column is in a task row (``_sql._task_row``'s layout).
_ROW_INDEX = (1, 2, 3, 4, 8, 9, 10, 11)
#: uuids per ``IN (...)`` list (SQLite allows 32,766 parameters).
_IN_CHUNK = 500

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    cluster TEXT NOT NULL,
    uuid TEXT NOT NULL,
    name TEXT, state TEXT, worker TEXT,
    received REAL, started REAL, timestamp REAL,
    args TEXT, kwargs TEXT, result TEXT, exception TEXT, traceback TEXT,
    data TEXT NOT NULL,
    UNIQUE (cluster, uuid)
);
-- Each filter of /api/tasks has its index, ending in the default order (newest first).
CREATE INDEX IF NOT EXISTS tasks_timestamp ON tasks (cluster, timestamp);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks (cluster, lower(name), timestamp);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (cluster, lower(state), timestamp);
CREATE INDEX IF NOT EXISTS tasks_worker ON tasks (cluster, lower(worker), timestamp);
CREATE INDEX IF NOT EXISTS tasks_received ON tasks (cluster, received);
CREATE INDEX IF NOT EXISTS tasks_started ON tasks (cluster, started);
CREATE VIRTUAL TABLE IF NOT EXISTS tasks_fts USING fts5(
    {_FTS_COLUMNS}, content='tasks', content_rowid='id', tokenize='trigram'
);
DROP TRIGGER IF EXISTS tasks_fts_insert;
DROP TRIGGER IF EXISTS tasks_fts_delete;
DROP TRIGGER IF EXISTS tasks_fts_update;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    timestamp REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events (task_id, id);
CREATE TABLE IF NOT EXISTS workers (
    cluster TEXT NOT NULL,
    hostname TEXT NOT NULL,
    timestamp REAL,
    data TEXT NOT NULL,
    PRIMARY KEY (cluster, hostname)
);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    cluster TEXT NOT NULL,
    start_at REAL NOT NULL,
    end_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gaps_cluster ON gaps (cluster, start_at);
CREATE TABLE IF NOT EXISTS meta (
    cluster TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (cluster, key)
);
"""


def _make_parent(path: str) -> None:
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _fts_phrase(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class SQLiteStore(SQLStore):
    """Task history in the SQLite file ``path`` (``":memory:"``: a private in-memory one)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self.busy_timeout = busy_timeout
        self._db: Any = None
        #: Reads outside a write: their own connection (and thread), so an API query never
        #: queues behind the writer's statements, and sees only committed rows (WAL).
        self._reader: Any = None
        self._in_write: contextvars.ContextVar[bool] = contextvars.ContextVar("w", default=False)
        self._lock = asyncio.Lock()  # one writer connection: one transaction at a time

    async def open(self) -> None:
        try:
            import aiosqlite  # noqa: F401 - the driver open_sqlite uses; a clear error if missing
        except ImportError as exc:  # pragma: no cover - the sqlite extra
            raise RuntimeError(
                "the SQLite store needs aiosqlite: pip install 'aiocelerymon[sqlite]'"
            ) from exc
        if self.path != ":memory:":
            await asyncio.to_thread(_make_parent, self.path)
        db = await open_sqlite(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.executescript(SCHEMA)
            reader = None
            if self.path != ":memory:":  # (another connection would be another database)
                reader = await open_sqlite(
                    self.path, timeout=self.busy_timeout, isolation_level=None
                )
                await reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await db.close()
            raise
        self._db, self._reader = db, reader

    async def aclose(self) -> None:
        db, self._db = self._db, None
        reader, self._reader = self._reader, None
        for conn in (reader, db):
            if conn is not None:
                await conn.close()

    def _conn(self) -> Any:
        if self._db is None:
            raise RuntimeError(f"the store {self.url} is not open")
        return self._db

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._conn().execute(sql, tuple(params))

    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn().executemany(sql, rows)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        conn = self._conn()
        if self._reader is not None and not self._in_write.get():
            conn = self._reader
        async with conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    # The search index is kept here rather than by triggers: a trigger (or INSERT ... SELECT)
    # writes FTS5 from a sub-statement, whose savepoint flushes FTS5's pending terms to a new
    # segment for every row (~4x the cost of a plain multi-row VALUES insert, measured).

    async def _write_tasks(self, rows: list[tuple[Any, ...]]) -> None:
        for start in range(0, len(rows), _IN_CHUNK):
            await self._write_chunk(rows[start : start + _IN_CHUNK])

    async def _write_chunk(self, rows: list[tuple[Any, ...]]) -> None:
        by_cluster: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_cluster.setdefault(row[0], []).append(row)
        for cluster, group in by_cluster.items():
            text = {row[1]: tuple(row[i] for i in _ROW_INDEX) for row in group}
            marks = ", ".join("?" * len(text))
            old = await self._fetch(
                f"SELECT id, {_FTS_COLUMNS} FROM tasks WHERE cluster = ? AND uuid IN ({marks})",
                [cluster, *text],
            )
            unchanged = {r[1] for r in old if tuple(r[1:]) == text[r[1]]}
            stale = [r for r in old if r[1] not in unchanged]
            if stale:
                await self._executemany(
                    f"INSERT INTO tasks_fts (tasks_fts, rowid, {_FTS_COLUMNS}) "
                    f"VALUES ('delete', ?, {_FTS_VALUES})",
                    [tuple(r) for r in stale],
                )
            await self._executemany(self._upsert_task, group)
            todo = [uuid for uuid in text if uuid not in unchanged]
            if not todo:
                continue
            ids = await self._fetch(
                f"SELECT id, uuid FROM tasks WHERE cluster = ? AND uuid IN "
                f"({', '.join('?' * len(todo))})",
                [cluster, *todo],
            )
            await self._executemany(
                f"INSERT INTO tasks_fts (rowid, {_FTS_COLUMNS}) VALUES (?, {_FTS_VALUES})",
                [(r[0], *text[r[1]]) for r in ids],
            )

    async def _delete_tasks(self, select_ids: str, params: Sequence[Any]) -> int:
        rows = await self._fetch(
            f"SELECT id, {_FTS_COLUMNS} FROM tasks WHERE id IN ({select_ids})", params
        )
        if not rows:
            return 0
        await self._executemany(
            f"INSERT INTO tasks_fts (tasks_fts, rowid, {_FTS_COLUMNS}) "
            f"VALUES ('delete', ?, {_FTS_VALUES})",
            [tuple(r) for r in rows],
        )
        await self._executemany("DELETE FROM tasks WHERE id = ?", [(r[0],) for r in rows])
        return len(rows)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        db = self._conn()
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            token = self._in_write.set(True)
            try:
                yield
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            finally:
                self._in_write.reset(token)
            await db.execute("COMMIT")

    def _text_term(self, field: str | None, value: str) -> tuple[str, list[Any]]:
        phrase = _fts_phrase(value)
        if len(value) < 3:  # below a trigram: the index cannot answer, LIKE can
            columns = [field] if field else list(SEARCH_COLUMNS)
            like = " OR ".join(f"lower({c}) LIKE ? ESCAPE '\\'" for c in columns)
            return f"({like})", [f"%{escape_like(value)}%"] * len(columns)
        query = f"{{{field}}} : {phrase}" if field else phrase
        return "id IN (SELECT rowid FROM tasks_fts WHERE tasks_fts MATCH ?)", [query]

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path}>"
