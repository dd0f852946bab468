"""Ingestion with the task history on (SQLite, PostgreSQL) against off, and size on disk.

The same pre-built stream (received/started/succeeded per task, four workers) goes through a
Monitor's ingestion path (``State.event``, the listeners, the hub: what the receiver calls per
decoded event) in chunks of 1,000 events, the loop free to run the writer between chunks, as
the receiver does between messages. Events/s from the first event until the last row is
committed (with the store on) or the last event is applied (off); the receiver's decoding is
the same in both and left out, so the share the store takes here is an upper bound of its
share of end-to-end ingestion.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiocelerymon
from aiocelerymon.pipeline import Monitor
from aiocelerymon.pipeline.history import HistoryWriter
from aiocelerymon.store import Batch, Store, TaskFilter, TaskRecord
from aiocelerymon.store.postgresql import PostgreSQLStore
from aiocelerymon.store.sqlite import SQLiteStore

CHUNK = 1000
CLUSTER = "bench://history"
#: Row names of this module (``python -m benchmarks --only history`` replaces them).
PREFIXES = ("ingest with history,", "history stored", "history size on disk", "history query")
#: Stored tasks the query rows run against.
QUERY_TASKS = 1_000_000


def _stream(tasks: int) -> list[dict[str, Any]]:
    now = time.time()
    events: list[dict[str, Any]] = []
    clock = 0
    for i in range(tasks):
        task_id = str(uuid.UUID(int=i))
        host = f"worker{i % 4}@bench"
        for kind, extra in (
            ("task-received", {"name": "proj.tasks.add", "args": f"({i}, 2)",
                               "kwargs": "{'user': 'bench'}", "retries": 0}),
            ("task-started", {"pid": 4242}),
            ("task-succeeded", {"result": str(i + 2), "runtime": 0.001}),
        ):  # fmt: skip
            clock += 1
            stamp = now + clock * 1e-5
            events.append({"hostname": host, "utcoffset": 0, "pid": 4242, "clock": clock,
                           "uuid": task_id, "timestamp": stamp, "type": kind,
                           "local_received": stamp, **extra})  # fmt: skip
    return events


async def _ingest(events: list[dict[str, Any]], store: Store | None) -> tuple[float, float]:
    """(events/s until the last event is applied, events/s until the last row is committed)"""
    client = aiocelerymon.Client("memory://bench-history")
    monitor = Monitor(client, max_tasks=100_000)
    writer = None
    if store is not None:
        await store.open()
        writer = HistoryWriter(monitor, store, cluster=CLUSTER)
        await writer.start()
    ingest = monitor._ingest  # the receiver's per-event handler
    start = time.perf_counter()
    for offset in range(0, len(events), CHUNK):
        for event in events[offset : offset + CHUNK]:
            ingest(dict(event))  # the receiver hands on a fresh dict per event
        await asyncio.sleep(0)
    applied = time.perf_counter() - start
    if writer is not None:
        await writer.wait_flushed(600)
    stored = time.perf_counter() - start
    if writer is not None:
        await writer.aclose()
    return len(events) / applied, len(events) / stored


def _sqlite_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def _pg_size(store: PostgreSQLStore) -> int:
    rows = await store._fetch(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
        "WHERE c.relname IN ('tasks', 'events', 'workers', 'gaps', 'meta') AND c.relkind = 'r'"
    )
    return int(rows[0][0])


@contextlib.contextmanager
def _postgres() -> Iterator[str | None]:
    try:
        from aiocelerymon.testing import postgres
    except ImportError:
        yield None
        return
    try:
        with postgres.postgres_server() as server:
            url = server.database()
            try:
                yield url
            finally:
                server.drop(url)
    except Exception as exc:  # no server: the SQLite rows only
        if type(exc).__name__ != "Skipped" and "unavailable" not in str(exc).lower():
            raise
        print(f"benchmarks: no PostgreSQL, SQLite rows only ({exc})")
        yield None


def _query_records(start: int, stop: int, total: int, now: float) -> list[TaskRecord]:
    return [
        TaskRecord(
            CLUSTER,
            f"{i:08x}-0000-4000-8000-000000000000",
            {
                "name": f"proj.tasks.t{i % 20}",
                "state": "FAILURE" if i % 50 == 0 else "SUCCESS",
                "worker": f"w{i % 8}@bench",
                "received": now - total + i,
                "started": now - total + i + 0.1,
                "timestamp": now - total + i + 0.2,
                "args": f"({i}, 'customer-{i % 1000}')",
                "kwargs": f"{{'order': {i}}}",
                "result": str(i * 2),
                "exception": "KeyError('x')" if i % 50 == 0 else None,
                "runtime": 0.1,
                "retries": 0,
            },
        )
        for i in range(start, stop)
    ]


#: ``/api/tasks`` queries as the page sends them: (label, filter keywords).
QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("newest page", {}),
    ("state=FAILURE", {"state": "FAILURE"}),
    ("taskname", {"name": "proj.tasks.t3"}),
    ("sort_by=-received", {"sort_by": "-received"}),
    ("search one customer", {"search": "customer-42"}),
    ("search kwargs:order=4242", {"search": "kwargs:order=4242"}),
]


async def _queries(store: Store, total: int, label: str) -> list[dict[str, Any]]:
    from aiocelerymon.web.search import parse_query

    now = time.time()
    for start in range(0, total, 5000):
        await store.write(Batch(tasks=_query_records(start, min(total, start + 5000), total, now)))
    rows = []
    for name, kw in QUERIES:
        kw = dict(kw)
        search = parse_query(kw.pop("search", ""))
        times = []
        for _ in range(30):
            begin = time.perf_counter()
            await store.query_tasks(TaskFilter(CLUSTER, search=search, limit=100, **kw))
            times.append((time.perf_counter() - begin) * 1e6)
        times.sort()
        for pct, value in (("p50", times[len(times) // 2]), ("p95", times[int(len(times) * 0.95)])):
            rows.append({"name": f"history query {name}, {pct}, {total:,} stored tasks, {label} "
                                 "(lower is better)",
                         "unit": "µs", "ours": value, "theirs": None,
                         "note": "a page of 100"})  # fmt: skip
    return rows


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    tasks = 5_000 if quick else 50_000
    events = _stream(tasks)
    gc.collect()
    gc.freeze()  # the input is not what a receiver holds (as benchmarks/state.py)
    try:
        return asyncio.run(_run(events, tasks, quick))
    finally:
        gc.unfreeze()


async def _run(events: list[dict[str, Any]], tasks: int, quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    off = max([(await _ingest(events, None))[0] for _ in range(2)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.sqlite3"
        sqlite = SQLiteStore(path)
        on, stored = await _ingest(events, sqlite)
        size = _sqlite_size(path)
        await sqlite.aclose()
        os.sync()
        big = SQLiteStore(Path(tmp) / "query.sqlite3")
        await big.open()
        query_rows = await _queries(big, 50_000 if quick else QUERY_TASKS, "SQLite")
        await big.aclose()
    label = f"{tasks:,} tasks, {len(events):,} events"
    rows.append({"name": f"ingest with history, SQLite, {label}", "unit": "events/s",
                 "ours": on, "theirs": off, "note": "vs store off"})  # fmt: skip
    rows.append({"name": f"history stored (all rows committed), SQLite, {label}",
                 "unit": "events/s", "ours": stored, "theirs": off,
                 "note": "vs store off"})  # fmt: skip
    rows.append({"name": "history size on disk per task, SQLite (lower is better)",
                 "unit": "B", "ours": size / tasks, "theirs": None,
                 "note": "3 events per task in its timeline"})  # fmt: skip
    with _postgres() as url:
        if url is not None:
            pg = PostgreSQLStore(url)
            on, stored = await _ingest(events, pg)
            size = await _pg_size(pg)
            await pg.aclose()
            rows.append({"name": f"ingest with history, PostgreSQL, {label}",
                         "unit": "events/s", "ours": on, "theirs": off,
                         "note": "vs store off"})  # fmt: skip
            rows.append({"name": f"history stored (all rows committed), PostgreSQL, {label}",
                         "unit": "events/s", "ours": stored, "theirs": off,
                         "note": "vs store off"})  # fmt: skip
            rows.append({"name": "history size on disk per task, PostgreSQL (lower is better)",
                         "unit": "B", "ours": size / tasks, "theirs": None,
                         "note": "tables and indexes"})  # fmt: skip
    return rows + query_rows


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
