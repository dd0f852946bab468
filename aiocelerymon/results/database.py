"""Celery's database (SQLAlchemy) result backend, read async without SQLAlchemy.

``db+sqlite:///path`` is read with aiosqlite (the ``sqlite`` extra: a thin asyncio bridge to the
standard library's sqlite3, opened read-only so a wrong path never creates a database);
``db+postgresql://`` with asyncpg (the ``postgresql`` extra: a native asyncio driver with
wheels, no libpq). The table is Celery's ``celery_taskmeta`` (``database_table_names['task']``,
``database_table_schemas['task']``), columns as in celery/backends/database/models.py: ``task_id``,
``status``, ``result``, ``date_done``, ``traceback``, and with ``result_extended`` ``name``,
``args``, ``kwargs``, ``worker``, ``retries``, ``queue``; Celery 5.7 adds ``children``.

Celery 5.7 stores ``result`` encoded with ``result_serializer`` (JSON by default); Celery 5.5
and 5.6 store it as a SQLAlchemy ``PickleType``, i.e. always pickled: those rows are refused
(:class:`~aiocelerymon.results.PickledResultError`), never unpickled.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from aiocelerymon._sqlite import open_sqlite
from aiocelerymon.exceptions import ConfigurationError
from aiocelerymon.results._base import (
    PickledResultError,
    ResultBackendError,
    ResultSettings,
    TaskResult,
    decode_json,
    iso_date,
)

__all__ = ["PostgresResultBackend", "SQLiteResultBackend", "open_backend", "table_names"]

TASK_TABLE = "celery_taskmeta"
GROUP_TABLE = "celery_tasksetmeta"
QUERY_TIMEOUT = 10.0


def table_names(settings: ResultSettings) -> dict[str, tuple[str | None, str]]:
    """``{"task": (schema, table), "group": (schema, table)}``, Celery's defaults overridden by
    ``database_table_names``/``database_table_schemas``."""
    names = settings.database_table_names or {}
    schemas = settings.database_table_schemas or {}
    return {
        "task": (schemas.get("task"), names.get("task") or TASK_TABLE),
        "group": (schemas.get("group"), names.get("group") or GROUP_TABLE),
    }


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ResultBackendError(
            f"reading this result backend needs {module}: pip install 'aiocelerymon[{extra}]'"
        )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _qualified(schema: str | None, table: str) -> str:
    return f"{_quote(schema)}.{_quote(table)}" if schema else _quote(table)


def _record(task_id: str, row: Mapping[str, Any], where: str) -> TaskResult:
    refused: list[str] = []

    def decoded(column: str) -> Any:
        try:
            return decode_json(row.get(column), f"the {column} of task {task_id} ({where})")
        except PickledResultError as exc:
            # The text columns (status, traceback) are still worth showing.
            refused.append(str(exc))
            return None

    retries = row.get("retries")
    children = decoded("children")
    result = decoded("result")
    args, kwargs = decoded("args"), decoded("kwargs")
    return TaskResult(
        task_id=str(row.get("task_id") or task_id),
        status=str(row.get("status") or "PENDING"),
        result=result,
        traceback=row.get("traceback"),
        date_done=iso_date(row.get("date_done")),
        children=children if isinstance(children, list) else None,
        name=row.get("name"),
        args=args,
        kwargs=kwargs,
        worker=row.get("worker"),
        retries=retries if isinstance(retries, int) else None,
        queue=row.get("queue"),
        refused=refused[0] if refused else None,
    )


def _missing_table(table: str) -> ResultBackendError:
    return ResultBackendError(
        f"the result table {table} does not exist: no worker stored a result there yet, or "
        "database_table_names/database_table_schemas differ from the workers'"
    )


class SQLiteResultBackend:
    """``db+sqlite:///relative/path`` or ``db+sqlite:////absolute/path``, opened read-only."""

    def __init__(self, settings: ResultSettings) -> None:
        assert settings.result_backend
        path = settings.result_backend.split("://", 1)[1]
        # SQLAlchemy: sqlite:///x.db is x.db, sqlite:////x.db is /x.db, sqlite:// is :memory:.
        path = path.split("?", 1)[0]
        if not path.startswith("/") or path in ("/", "/:memory:"):
            raise ConfigurationError(
                "an in-memory SQLite result backend (db+sqlite://) lives inside one process; "
                "point result_backend at a database file: db+sqlite:///path/to/results.db"
            )
        _require("aiosqlite", "sqlite")
        self.path = unquote(path[1:])
        schema, table = table_names(settings)["task"]
        self._table = _qualified(schema, table)
        self._label = f"SQLite {self.path}"
        self._connection: Any = None

    async def _connect(self) -> Any:
        if self._connection is None:
            import aiosqlite

            # mode=ro: never create (or write to) the workers' database.
            uri = f"file:{self.path}?mode=ro"
            try:
                async with asyncio.timeout(QUERY_TIMEOUT):
                    connection = await open_sqlite(uri, uri=True)
            except Exception as exc:
                raise ResultBackendError(f"cannot open the {self._label}: {exc}") from exc
            connection.row_factory = aiosqlite.Row
            self._connection = connection
        return self._connection

    async def get(self, task_id: str) -> TaskResult:
        import aiosqlite

        connection = await self._connect()
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                cursor = await connection.execute(
                    f"SELECT * FROM {self._table} WHERE task_id = ?",
                    (task_id,),
                )
                row = await cursor.fetchone()
                await cursor.close()
        except TimeoutError:
            raise ResultBackendError(f"no answer from the {self._label} in time") from None
        except aiosqlite.OperationalError as exc:
            if "no such table" in str(exc):
                raise _missing_table(self._table) from exc
            raise ResultBackendError(f"cannot read the {self._label}: {exc}") from exc
        if row is None:
            return TaskResult(task_id)
        return _record(task_id, {key: row[key] for key in row.keys()}, self._label)  # noqa: SIM118

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def __repr__(self) -> str:
        return f"<SQLiteResultBackend {self.path}>"


def _postgres_dsn(url: str) -> str:
    """``db+postgresql+psycopg2://...`` -> ``postgresql://...`` (asyncpg's DSN)."""
    parts = urlsplit(url.removeprefix("db+"))
    return urlunsplit(parts._replace(scheme="postgresql"))


def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:**@{netloc[1]}"))


class PostgresResultBackend:
    """``db+postgresql://user:password@host:port/database``, read with asyncpg."""

    def __init__(self, settings: ResultSettings) -> None:
        assert settings.result_backend
        _require("asyncpg", "postgresql")
        self._dsn = _postgres_dsn(settings.result_backend)
        schema, table = table_names(settings)["task"]
        self._table = _qualified(schema, table)
        self._label = f"PostgreSQL database {_redacted(self._dsn)}"
        self._timeout = settings.connect_timeout
        self._connection: Any = None

    async def _connect(self) -> Any:
        if self._connection is None or self._connection.is_closed():
            import asyncpg

            try:
                self._connection = await asyncpg.connect(self._dsn, timeout=self._timeout)
            except Exception as exc:
                message = str(exc).replace(self._dsn, _redacted(self._dsn))
                raise ResultBackendError(f"cannot connect to the {self._label}: {message}") from exc
        return self._connection

    async def get(self, task_id: str) -> TaskResult:
        import asyncpg

        connection = await self._connect()
        try:
            row = await connection.fetchrow(
                f"SELECT * FROM {self._table} WHERE task_id = $1",
                task_id,
                timeout=QUERY_TIMEOUT,
            )
        except asyncpg.UndefinedTableError as exc:
            raise _missing_table(self._table) from exc
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            raise ResultBackendError(f"cannot read the {self._label}: {exc}") from exc
        if row is None:
            return TaskResult(task_id)
        return _record(task_id, dict(row.items()), self._label)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close(timeout=QUERY_TIMEOUT)

    def __repr__(self) -> str:
        return f"<PostgresResultBackend {_redacted(self._dsn)}>"


def open_backend(settings: ResultSettings) -> SQLiteResultBackend | PostgresResultBackend:
    """The adapter entry point :func:`aiocelerymon.results.open_backend` calls."""
    assert settings.result_backend
    dialect = settings.result_backend.partition("://")[0].lower()[3:].split("+", 1)[0]
    if dialect == "sqlite":
        return SQLiteResultBackend(settings)
    return PostgresResultBackend(settings)
