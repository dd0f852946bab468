"""Task history: one small async interface (:class:`Store`), SQLite and PostgreSQL adapters.

``open_store(url)`` picks the adapter by URL: ``sqlite:///path/to/file.sqlite3`` (or a bare
path), ``sqlite://:memory:``, ``postgresql://user:password@host/db``. The drivers are extras:
``aiocelerymon[sqlite]`` (aiosqlite), ``aiocelerymon[postgresql]`` (asyncpg).
"""

from __future__ import annotations

from aiocelerymon.store._base import (
    DEFAULT_FIELD_LIMIT,
    Batch,
    EventRecord,
    Gap,
    SearchNode,
    Store,
    TaskFilter,
    TaskRecord,
    WorkerRecord,
    jsonable,
    kwargs_pairs,
    truncate,
)

__all__ = [
    "DEFAULT_FIELD_LIMIT",
    "Batch",
    "EventRecord",
    "Gap",
    "SearchNode",
    "Store",
    "TaskFilter",
    "TaskRecord",
    "WorkerRecord",
    "jsonable",
    "kwargs_pairs",
    "open_store",
    "store_for_url",
    "truncate",
]


def store_for_url(url: str) -> Store:
    """The adapter for ``url``, not yet opened; ``ValueError`` for an unknown scheme."""
    raw = url.strip()
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme in ("postgresql", "postgres"):
        from aiocelerymon.store.postgresql import PostgreSQLStore

        return PostgreSQLStore(raw)
    if scheme in ("sqlite", "sqlite3"):
        path = rest
        if path in ("", ":memory:", "/:memory:"):
            path = ":memory:"
        elif path.startswith("/"):
            path = path[1:]  # sqlite:///relative, sqlite:////absolute (SQLAlchemy's rule)
        if not path:
            raise ValueError(f"no file in the SQLite URL {url!r}")
        from aiocelerymon.store.sqlite import SQLiteStore

        return SQLiteStore(path)
    if not sep and raw:
        from aiocelerymon.store.sqlite import SQLiteStore

        return SQLiteStore(raw)  # a bare file path
    raise ValueError(
        f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
    )


async def open_store(url: str) -> Store:
    """:func:`store_for_url`, opened (the schema created)."""
    store = store_for_url(url)
    await store.open()
    return store
