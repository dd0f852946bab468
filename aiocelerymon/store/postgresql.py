"""The shared store: PostgreSQL (asyncpg), for teams and for an HA pair of ``serve``.

Search: a generated, lower-cased concatenation of the searched columns with a trigram GIN
index (``pg_trgm``) answers Flower's substring terms of any column (``LIKE '%term%'``); a
term on one field adds that column's own ``LIKE`` on top. PostgreSQL's word-based ``tsvector``
would change Flower's semantics (``add`` would no longer find ``tasks.add_numbers``), so the
trigram index is used. Without the ``pg_trgm`` extension (no right to create it) the same
queries run unindexed.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiocelerymon.store._base import SEARCH_COLUMNS
from aiocelerymon.store._sql import SQLStore, escape_like

__all__ = ["PostgreSQLStore", "redact"]

log = logging.getLogger("aiocelerymon.store")

_SEARCH_EXPR = " || chr(31) || ".join(f"coalesce({c}, '')" for c in SEARCH_COLUMNS)

SCHEMA = [
    f"""
    CREATE TABLE IF NOT EXISTS tasks (
        id BIGSERIAL PRIMARY KEY,
        cluster TEXT NOT NULL,
        uuid TEXT NOT NULL,
        name TEXT, state TEXT, worker TEXT,
        received DOUBLE PRECISION, started DOUBLE PRECISION, timestamp DOUBLE PRECISION,
        args TEXT, kwargs TEXT, result TEXT, exception TEXT, traceback TEXT,
        data TEXT NOT NULL,
        search TEXT GENERATED ALWAYS AS (lower({_SEARCH_EXPR})) STORED,
        UNIQUE (cluster, uuid)
    )
    """,
    "CREATE INDEX IF NOT EXISTS tasks_timestamp ON tasks (cluster, timestamp)",
    "CREATE INDEX IF NOT EXISTS tasks_name ON tasks (cluster, lower(name), timestamp)",
    "CREATE INDEX IF NOT EXISTS tasks_state ON tasks (cluster, lower(state), timestamp)",
    "CREATE INDEX IF NOT EXISTS tasks_worker ON tasks (cluster, lower(worker), timestamp)",
    "CREATE INDEX IF NOT EXISTS tasks_received ON tasks (cluster, received)",
    "CREATE INDEX IF NOT EXISTS tasks_started ON tasks (cluster, started)",
    """
    CREATE TABLE IF NOT EXISTS events (
        id BIGSERIAL PRIMARY KEY,
        task_id BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        timestamp DOUBLE PRECISION,
        data TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS events_task ON events (task_id, id)",
    """
    CREATE TABLE IF NOT EXISTS workers (
        cluster TEXT NOT NULL,
        hostname TEXT NOT NULL,
        timestamp DOUBLE PRECISION,
        data TEXT NOT NULL,
        PRIMARY KEY (cluster, hostname)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS gaps (
        id BIGSERIAL PRIMARY KEY,
        cluster TEXT NOT NULL,
        start_at DOUBLE PRECISION NOT NULL,
        end_at DOUBLE PRECISION NOT NULL,
        reason TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS gaps_cluster ON gaps (cluster, start_at)",
    """
    CREATE TABLE IF NOT EXISTS meta (
        cluster TEXT NOT NULL,
        key TEXT NOT NULL,
        value DOUBLE PRECISION,
        PRIMARY KEY (cluster, key)
    )
    """,
]
TRIGRAM = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS tasks_search ON tasks USING gin (search gin_trgm_ops)",
]
#: Serializes concurrent schema creation (two ``serve`` on one new database).
_SCHEMA_LOCK = 0x61696F63656C6D6F  # "aiocelmo"

_PLACEHOLDER = re.compile(r"\?")


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:**@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (our SQL has no literal ``?``)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgreSQLStore(SQLStore):
    """Task history in the PostgreSQL database at ``dsn`` (a ``postgresql://`` URL)."""

    _no_limit = "LIMIT ALL "

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self._dsn = dsn
        self.url = redact(dsn)
        self.min_size, self.max_size = min_size, max_size
        self._pool: Any = None
        #: The connection of the transaction the current task is in (reads join it).
        self._tx: contextvars.ContextVar[Any] = contextvars.ContextVar("tx", default=None)
        self._sql: dict[str, str] = {}
        self.trigram = False

    async def open(self) -> None:
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - the postgresql extra
            raise RuntimeError(
                "the PostgreSQL store needs asyncpg: pip install 'aiocelerymon[postgresql]'"
            ) from exc
        pool = await asyncpg.create_pool(self._dsn, min_size=self.min_size, max_size=self.max_size)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                for statement in SCHEMA:
                    await conn.execute(statement)
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                    for statement in TRIGRAM:
                        await conn.execute(statement)
                self.trigram = True
            except asyncpg.PostgresError as exc:
                log.warning("pg_trgm unavailable (%s): search runs without its index", exc)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _prepare(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = _numbered(sql)
        return out

    def _pool_or_raise(self) -> Any:
        if self._pool is None:
            raise RuntimeError(f"the store {self.url} is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        async with self._pool_or_raise().acquire() as conn, conn.transaction():
            token = self._tx.set(conn)
            try:
                yield
            finally:
                self._tx.reset(token)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        tx = self._tx.get()
        if tx is not None:
            yield tx
        else:
            async with self._pool_or_raise().acquire() as conn:
                yield conn

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async with self._connection() as conn:
            await conn.execute(self._prepare(sql), *params)

    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._connection() as conn:
            await conn.executemany(self._prepare(sql), rows)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        async with self._connection() as conn:
            return [tuple(r) for r in await conn.fetch(self._prepare(sql), *params)]

    async def _delete_tasks(self, select_ids: str, params: Sequence[Any]) -> int:
        sql = self._prepare(f"DELETE FROM tasks WHERE id IN ({select_ids})")
        async with self._connection() as conn:
            status = await conn.execute(sql, *params)
        return int(str(status).rsplit(" ", 1)[-1])  # "DELETE 12"

    def _text_term(self, field: str | None, value: str) -> tuple[str, list[Any]]:
        pattern = f"%{escape_like(value.lower())}%"
        if field is None:
            return "search LIKE ?", [pattern]
        # The generated column's index narrows; the column's own LIKE decides.
        return f"(search LIKE ? AND lower({field}) LIKE ?)", [pattern, pattern]

    def __repr__(self) -> str:
        return f"<PostgreSQLStore {self.url}>"
