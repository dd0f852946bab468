"""What the SQL adapters share: the queries, written once with ``?`` placeholders.

An adapter supplies the driver calls (:meth:`SQLStore._execute`, ``_executemany``, ``_fetch``,
``_transaction``), its schema and its full-text term (:meth:`SQLStore._text_term`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from aiocelerymon.store._base import (
    SEARCH_COLUMNS,
    TEXT_FIELDS,
    Batch,
    EventRecord,
    Gap,
    SearchNode,
    TaskFilter,
    TaskRecord,
    WorkerRecord,
    dumps,
    kwargs_pairs,
    loads,
)

#: Task fields held in their own columns (indexed, searched); the rest go in ``data``.
COLUMNS = ("name", "state", "worker", "received", "started", "timestamp", *TEXT_FIELDS)
_ROW_KEYS = ("uuid", *COLUMNS)
#: Rows read per round while a query filters in Python (exact ``kwargs:key=value`` pairs).
SCAN_CHUNK = 500

_TASK_SELECT = (
    "SELECT uuid, name, state, worker, received, started, timestamp, "
    "args, kwargs, result, exception, traceback, data FROM tasks"
)


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _has_pair_term(node: SearchNode) -> bool:
    if node[0] in ("and", "or"):
        return any(_has_pair_term(child) for child in node[1])
    return node[0] == "term" and node[1] == "kwargs" and "=" in node[2]


def _matches_pairs(node: SearchNode, kwargs: Any) -> bool:
    """Re-check a search whose SQL form only narrowed ``kwargs:key=value`` terms."""
    kind = node[0]
    if kind == "and":
        return all(_matches_pairs(child, kwargs) for child in node[1])
    if kind == "or":
        return any(_matches_pairs(child, kwargs) for child in node[1])
    if kind == "term" and node[1] == "kwargs" and "=" in node[2]:
        key, _, item = node[2].partition("=")
        return f"{key.strip()}={item.strip()}" in kwargs_pairs(kwargs)
    return True  # the SQL condition was exact for every other term


class SQLStore:
    """The queries of :class:`~aiocelerymon.store.Store`, over an adapter's driver calls."""

    url: str

    # -- the adapter's part ------------------------------------------------------------------

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _text_term(self, field: str | None, value: str) -> tuple[str, list[Any]]:
        """A condition on ``tasks`` true when ``field`` (any search column if None)
        contains ``value`` (casefolded), case-insensitively."""
        raise NotImplementedError

    #: ``INSERT ... ON CONFLICT`` is the same in both dialects.
    _upsert_task = (
        "INSERT INTO tasks (cluster, uuid, name, state, worker, received, started, timestamp, "
        "args, kwargs, result, exception, traceback, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (cluster, uuid) DO UPDATE SET name = excluded.name, "
        "state = excluded.state, worker = excluded.worker, received = excluded.received, "
        "started = excluded.started, timestamp = excluded.timestamp, args = excluded.args, "
        "kwargs = excluded.kwargs, result = excluded.result, exception = excluded.exception, "
        "traceback = excluded.traceback, data = excluded.data"
    )
    _upsert_worker = (
        "INSERT INTO workers (cluster, hostname, timestamp, data) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (cluster, hostname) DO UPDATE SET timestamp = excluded.timestamp, "
        "data = excluded.data"
    )
    # The event joins its task's row: an event is kept as long as its task (ON DELETE CASCADE).
    _insert_event = (
        "INSERT INTO events (task_id, type, timestamp, data) "
        "SELECT id, CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION), CAST(? AS TEXT) FROM tasks "
        "WHERE cluster = ? AND uuid = ?"
    )
    _upsert_meta = (
        "INSERT INTO meta (cluster, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (cluster, key) DO UPDATE SET value = excluded.value"
    )

    # -- writes ------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        async with self._transaction():
            if batch.tasks:
                await self._write_tasks([_task_row(t) for t in batch.tasks])
            if batch.workers:
                await self._executemany(
                    self._upsert_worker,
                    [(w.cluster, w.hostname, w.timestamp, dumps(w.fields)) for w in batch.workers],
                )
            if batch.events:
                await self._executemany(
                    self._insert_event,
                    [
                        (e.type, e.timestamp, dumps(e.fields), e.cluster, e.uuid)
                        for e in batch.events
                    ],
                )
            if batch.gaps:
                await self._executemany(
                    self._insert_gap, [(g.cluster, g.start, g.end, g.reason) for g in batch.gaps]
                )
            if batch.alive is not None:
                await self._execute(self._upsert_meta, (batch.alive[0], "alive", batch.alive[1]))

    _insert_gap = "INSERT INTO gaps (cluster, start_at, end_at, reason) VALUES (?, ?, ?, ?)"

    async def add_gap(self, gap: Gap) -> None:
        async with self._transaction():
            await self._execute(self._insert_gap, (gap.cluster, gap.start, gap.end, gap.reason))

    async def prune(
        self, cluster: str, *, before: float | None = None, keep: int | None = None
    ) -> int:
        deleted = 0
        async with self._transaction():
            if before is not None:
                deleted += await self._delete_tasks(
                    "SELECT id FROM tasks WHERE cluster = ? AND timestamp < ?", (cluster, before)
                )
            if keep is not None:
                deleted += await self._delete_tasks(
                    "SELECT id FROM tasks WHERE cluster = ? "
                    f"ORDER BY timestamp DESC, id DESC {self._no_limit}OFFSET ?",
                    (cluster, max(keep, 0)),
                )
        return deleted

    #: How the dialect says "no limit" before an OFFSET.
    _no_limit = "LIMIT -1 "

    async def _write_tasks(self, rows: list[tuple[Any, ...]]) -> None:
        """Upsert task rows (``_task_row``'s layout), inside the write's transaction."""
        await self._executemany(self._upsert_task, rows)

    async def _delete_tasks(self, select_ids: str, params: Sequence[Any]) -> int:
        """Delete the tasks whose ids ``select_ids`` selects (their events go with them)."""
        raise NotImplementedError

    # -- reads -------------------------------------------------------------------------------

    async def get_task(self, cluster: str, uuid: str) -> TaskRecord | None:
        rows = await self._fetch(f"{_TASK_SELECT} WHERE cluster = ? AND uuid = ?", (cluster, uuid))
        return _task_record(cluster, rows[0]) if rows else None

    async def task_events(self, cluster: str, uuid: str) -> list[EventRecord]:
        rows = await self._fetch(
            "SELECT e.type, e.timestamp, e.data FROM events e JOIN tasks t ON t.id = e.task_id "
            "WHERE t.cluster = ? AND t.uuid = ? ORDER BY e.id",
            (cluster, uuid),
        )
        return [EventRecord(cluster, uuid, r[0], r[1], loads(r[2]) or {}) for r in rows]

    async def recent_tasks(self, cluster: str, limit: int) -> list[TaskRecord]:
        rows = await self._fetch(
            f"{_TASK_SELECT} WHERE cluster = ? ORDER BY timestamp DESC, id DESC LIMIT ?",
            (cluster, max(limit, 0)),
        )
        return [_task_record(cluster, row) for row in rows]

    async def workers(self, cluster: str) -> list[WorkerRecord]:
        rows = await self._fetch(
            "SELECT hostname, timestamp, data FROM workers WHERE cluster = ? ORDER BY hostname",
            (cluster,),
        )
        return [WorkerRecord(cluster, r[0], loads(r[2]) or {}, r[1]) for r in rows]

    async def count_tasks(self, cluster: str) -> int:
        rows = await self._fetch("SELECT count(*) FROM tasks WHERE cluster = ?", (cluster,))
        return int(rows[0][0])

    async def gaps(self, cluster: str, limit: int = 100) -> list[Gap]:
        rows = await self._fetch(
            "SELECT start_at, end_at, reason FROM gaps WHERE cluster = ? "
            "ORDER BY start_at DESC, id DESC LIMIT ?",
            (cluster, max(limit, 0)),
        )
        return [Gap(cluster, r[0], r[1], r[2]) for r in rows]

    async def last_alive(self, cluster: str) -> float | None:
        rows = await self._fetch(
            "SELECT value FROM meta WHERE cluster = ? AND key = 'alive'", (cluster,)
        )
        return float(rows[0][0]) if rows else None

    async def query_tasks(self, query: TaskFilter) -> list[TaskRecord]:
        where, params = self._where(query)
        order = self._order(query.sort_by)
        base = f"{_TASK_SELECT} WHERE {where} ORDER BY {order}"
        if not _has_pair_term(query.search):
            sql, args = base, list(params)
            if query.limit is not None:
                sql += " LIMIT ? OFFSET ?"
                args += [query.limit, query.offset]
            elif query.offset:
                sql += f" {self._no_limit}OFFSET ?"
                args.append(query.offset)
            return [_task_record(query.cluster, row) for row in await self._fetch(sql, args)]
        # kwargs:key=value is an exact pair of the parsed kwargs: SQL narrows to rows holding
        # both strings, Python checks the pair; rows are read in chunks until the page is full.
        page: list[TaskRecord] = []
        skip, want = query.offset, query.limit
        position = 0
        while want is None or len(page) < want:
            rows = await self._fetch(f"{base} LIMIT ? OFFSET ?", [*params, SCAN_CHUNK, position])
            position += len(rows)
            for row in rows:
                record = _task_record(query.cluster, row)
                if not _matches_pairs(query.search, record.fields.get("kwargs")):
                    continue
                if skip:
                    skip -= 1
                    continue
                page.append(record)
                if want is not None and len(page) >= want:
                    break
            if len(rows) < SCAN_CHUNK:
                break
        return page

    def _where(self, q: TaskFilter) -> tuple[str, list[Any]]:
        parts = ["cluster = ?"]
        params: list[Any] = [q.cluster]
        for column, value in (("name", q.name), ("state", q.state), ("worker", q.worker)):
            if value:
                parts.append(f"lower({column}) = ?")
                params.append(value.lower())
        for column, lo, hi in (
            ("received", q.received_start, q.received_end),
            ("started", q.started_start, q.started_end),
        ):
            if lo is not None:
                parts.append(f"({column} IS NULL OR {column} >= ?)")
                params.append(lo)
            if hi is not None:
                parts.append(f"({column} IS NULL OR {column} <= ?)")
                params.append(hi)
        if q.search[0] != "all":
            sql, args = self._search(q.search)
            parts.append(sql)
            params += args
        return " AND ".join(parts), params

    def _search(self, node: SearchNode) -> tuple[str, list[Any]]:
        kind = node[0]
        if kind in ("and", "or"):
            parts, params = [], []
            for child in node[1]:
                sql, args = self._search(child)
                parts.append(sql)
                params += args
            return "(" + f" {kind.upper()} ".join(parts) + ")", params
        _, field, value = node
        if field is not None and field not in SEARCH_COLUMNS:
            raise ValueError(f"cannot search the field {field!r}")
        if field == "state":
            return "lower(state) = ?", [value.lower()]
        if field == "kwargs" and "=" in value:
            # Narrowed by the value (keys repeat on every task of a kind: intersecting a key's
            # posting list costs and narrows nothing), by the key only for an empty value;
            # the pair itself is checked exactly in Python.
            key, _, item = value.partition("=")
            piece = item.strip() or key.strip()
            return self._text_term("kwargs", piece) if piece else ("1 = 1", [])
        return self._text_term(field, value)

    @staticmethod
    def _order(sort_by: str | None) -> str:
        if not sort_by:
            return "timestamp DESC NULLS LAST, uuid DESC"
        descending = sort_by.startswith("-")
        column = sort_by.lstrip("-")
        expr = f"lower({column})" if column in ("name", "state") else column
        # Flower's order: a task without the field sorts first ascending, last descending.
        if descending:
            return f"{expr} DESC NULLS LAST, uuid DESC"
        return f"{expr} ASC NULLS FIRST, uuid ASC"


def _task_row(task: TaskRecord) -> tuple[Any, ...]:
    fields = task.fields
    rest = dict(fields)
    for key in _ROW_KEYS:
        rest.pop(key, None)
    return (
        task.cluster,
        task.uuid,
        _text(fields.get("name")),
        _text(fields.get("state")),
        _text(fields.get("worker")),
        _float(fields.get("received")),
        _float(fields.get("started")),
        _float(fields.get("timestamp")),
        *(_text(fields.get(name)) for name in TEXT_FIELDS),
        dumps(rest),
    )


def _task_record(cluster: str, row: Sequence[Any]) -> TaskRecord:
    fields: dict[str, Any] = loads(row[12]) or {}
    fields["uuid"] = row[0]
    for i, name in enumerate(COLUMNS, start=1):
        fields[name] = row[i]
    return TaskRecord(cluster, row[0], fields)
