"""Celery's Redis result backend, read with redis.asyncio (the ``redis`` extra).

Celery stores each task's meta dict under ``celery-task-meta-<task_id>``, serialized with
``result_serializer``; ``result_backend_transport_options['global_keyprefix']`` is put in front,
with ``_`` appended unless it ends in one of ``:_-.`` (celery/backends/base.py,
``KeyValueStoreBackend._add_global_keyprefix``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import RedisError

from aiocelerymon._url import parse_url
from aiocelerymon.exceptions import DecodeError
from aiocelerymon.results._base import (
    ResultBackendError,
    ResultSettings,
    TaskResult,
    decode_json,
)
from aiocelerymon.transports.redis import _execute, connection_params, map_error

__all__ = ["TASK_KEYPREFIX", "RedisResultBackend", "open_backend", "task_key"]

TASK_KEYPREFIX = "celery-task-meta-"
#: One GET must not hang on a server that stopped answering.
COMMAND_TIMEOUT = 10.0


def task_key(task_id: str, global_keyprefix: str | None = None) -> str:
    """The key Celery's Redis backend stores ``task_id``'s meta under."""
    prefix = global_keyprefix or ""
    if prefix and prefix[-1] not in ":_-.":
        prefix += "_"
    return f"{prefix}{TASK_KEYPREFIX}{task_id}"


class RedisResultBackend:
    """Reads ``celery-task-meta-*`` keys; one connection pool, opened on first use."""

    def __init__(self, settings: ResultSettings) -> None:
        assert settings.result_backend
        self._url = parse_url(settings.result_backend)
        options = dict(settings.result_backend_transport_options or {})
        prefix = options.get("global_keyprefix")
        self._prefix = str(prefix) if prefix else None
        self._timeout = settings.connect_timeout
        self._client: Redis | None = None
        self._pool: ConnectionPool | None = None

    def _connect(self) -> Redis:
        if self._client is None:
            connection_class, kwargs = connection_params(
                self._url, None, connect_timeout=self._timeout
            )
            self._pool = ConnectionPool(
                connection_class=connection_class, max_connections=4, **kwargs
            )
            self._client = Redis(connection_pool=self._pool)
        return self._client

    async def get(self, task_id: str) -> TaskResult:
        key = task_key(task_id, self._prefix)
        client = self._connect()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                raw: Any = await _execute(client)("GET", key)
        except TimeoutError:
            raise ResultBackendError(
                f"no answer from the result backend {self._url} within {COMMAND_TIMEOUT}s"
            ) from None
        except (RedisError, OSError) as exc:
            raise ResultBackendError(str(map_error(exc, self._url, connecting=True))) from exc
        if raw is None:
            return TaskResult(task_id)
        meta = decode_json(raw, f"the result of task {task_id} (Redis key {key!r})")
        if not isinstance(meta, dict):
            raise DecodeError(f"Redis key {key!r} does not hold a Celery result meta dict")
        return TaskResult.from_meta(task_id, meta)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        pool, self._pool = self._pool, None
        if client is not None:
            await client.aclose()
        if pool is not None:
            # A pool handed to Redis() is not closed with it.
            await pool.disconnect()

    def __repr__(self) -> str:
        return f"<RedisResultBackend {self._url}>"


def open_backend(settings: ResultSettings) -> RedisResultBackend:
    """The adapter entry point :func:`aiocelerymon.results.open_backend` calls."""
    return RedisResultBackend(settings)
