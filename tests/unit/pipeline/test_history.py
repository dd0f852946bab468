"""The history writer on a real Monitor (in-memory broker, real dispatchers, SQLite file)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiocelerymon
from aiocelerymon.events import State
from aiocelerymon.pipeline import Monitor
from aiocelerymon.pipeline.history import HistoryWriter, warm_state
from aiocelerymon.store import Batch, Store
from aiocelerymon.store.sqlite import SQLiteStore

DEADLINE = 20.0
CLUSTER = "memory://test"


@pytest.fixture
async def client() -> AsyncIterator[aiocelerymon.Client]:
    async with aiocelerymon.Client(f"memory://hist-{uuid.uuid4().hex}") as c:
        yield c


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "history.sqlite3")
    await s.open()
    yield s
    await s.aclose()


class GatedStore:
    """A real store whose writes wait for a gate: a store slower than any stream."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.batches: list[int] = []

    async def write(self, batch: Batch) -> None:
        self.writing.set()
        await self.gate.wait()
        self.batches.append(len(batch.tasks))
        await self.inner.write(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def life(client: aiocelerymon.Client, host: str, task_id: str, fail: bool = False) -> None:
    d = client.events.dispatcher(host)
    await d.send("task-received", uuid=task_id, name="proj.add", args="(1, 2)", kwargs="{}")
    await d.send("task-started", uuid=task_id)
    if fail:
        await d.send("task-failed", uuid=task_id, exception="ValueError('x')",
                     traceback="Traceback (most recent call last):\nValueError: x")  # fmt: skip
    else:
        await d.send("task-succeeded", uuid=task_id, result="3", runtime=0.5)
    await d.flush()


async def test_every_task_event_and_worker_is_written(client, store):
    async with Monitor(client) as monitor:
        writer = HistoryWriter(monitor, store, cluster=CLUSTER, interval=0.05)
        await writer.start()
        try:
            await life(client, "w1@h", "ok-1")
            await life(client, "w1@h", "bad-1", fail=True)
            await monitor.wait_for(lambda: len(monitor.state.tasks) == 2, DEADLINE)
            await monitor.wait_for(
                lambda: monitor.state.tasks["bad-1"].state == "FAILURE", DEADLINE
            )
            await writer.wait_flushed(DEADLINE)
        finally:
            await writer.aclose()
    bad = await store.get_task(CLUSTER, "bad-1")
    assert bad is not None
    assert bad.fields["state"] == "FAILURE"
    assert bad.fields["traceback"].endswith("ValueError: x")
    assert bad.fields["worker"] == "w1@h"
    assert set(bad.fields) >= set(State.Task._fields)  # every State field
    timeline = await store.task_events(CLUSTER, "bad-1")
    assert [e.type for e in timeline] == ["task-received", "task-started", "task-failed"]
    assert [w.hostname for w in await store.workers(CLUSTER)] == ["w1@h"]
    assert writer.stats.dropped_events == 0 and writer.stats.write_errors == 0


async def test_fields_are_truncated_at_the_limit(client, store):
    async with Monitor(client) as monitor:
        writer = HistoryWriter(monitor, store, cluster=CLUSTER, interval=0.05, field_limit=100)
        await writer.start()
        d = client.events.dispatcher("w1@h")
        await d.send("task-received", uuid="big", name="t", args="x" * 5000, kwargs="{}")
        await d.flush()
        await monitor.wait_for(lambda: "big" in monitor.state.tasks, DEADLINE)
        await writer.aclose()
    got = await store.get_task(CLUSTER, "big")
    assert got is not None
    assert got.fields["args"] == "x" * 100 + "... [4900 more characters]"
    assert monitor.state.tasks["big"].args == "x" * 5000  # the State keeps it whole


async def test_a_slow_store_coalesces_and_never_stalls_ingestion(client, store):
    gated = GatedStore(store)
    n = 200
    async with Monitor(client, max_tasks=10_000) as monitor:
        writer = HistoryWriter(monitor, gated, cluster=CLUSTER, interval=0.01, batch_size=50)
        await writer.start()
        try:
            await life(client, "w1@h", "first")
            await asyncio.wait_for(gated.writing.wait(), DEADLINE)  # a write is stuck now
            for i in range(n):
                await life(client, "w1@h", f"t{i}", fail=i % 7 == 0)
            # Every event reached the State while the store could not take a single row.
            await monitor.wait_for(
                lambda: all(
                    f"t{i}" in monitor.state.tasks and monitor.state.tasks[f"t{i}"].ready
                    for i in range(n)
                ),
                DEADLINE,
            )
            assert gated.batches == []
            assert writer.stats.coalesced >= 2 * n  # started/finished joined the received row
            assert writer.stats.pending == n
            gated.gate.set()
            await writer.wait_flushed(DEADLINE)
        finally:
            await writer.aclose()
    # Each task written once after the gate opened, with its latest state.
    assert sum(gated.batches) == n + 1
    assert max(gated.batches) <= 50
    for i in (0, 1, 7, n - 1):
        row = await store.get_task(CLUSTER, f"t{i}")
        assert row is not None
        assert row.fields["state"] == ("FAILURE" if i % 7 == 0 else "SUCCESS")
        assert len(await store.task_events(CLUSTER, f"t{i}")) == 3


async def test_bounded_buffers_count_what_they_drop(client, store):
    gated = GatedStore(store)
    async with Monitor(client) as monitor:
        writer = HistoryWriter(
            monitor, gated, cluster=CLUSTER, interval=0.01, max_pending=10, max_pending_events=15
        )
        await writer.start()
        await life(client, "w1@h", "first")
        await asyncio.wait_for(gated.writing.wait(), DEADLINE)
        for i in range(20):
            await life(client, "w1@h", f"t{i}")
        await monitor.wait_for(lambda: len(monitor.state.tasks) == 21, DEADLINE)
        stats = writer.stats
        assert stats.pending == 10 and stats.dropped_tasks == 30  # 3 events x 10 tasks
        assert stats.dropped_events == 30 - 15
        gated.gate.set()
        await writer.aclose()
    assert await store.count_tasks(CLUSTER) == 11


async def test_retention_and_downtime_gap(client, store):
    await store.write(Batch(alive=(CLUSTER, 1000.0)))
    async with Monitor(client) as monitor:
        writer = HistoryWriter(monitor, store, cluster=CLUSTER, interval=0.05, max_count=3)
        await writer.start()
        for i in range(6):
            await life(client, "w1@h", f"t{i}")
        await monitor.wait_for(lambda: len(monitor.state.tasks) == 6, DEADLINE)
        await writer.wait_flushed(DEADLINE)
        assert await writer.prune() == 3
        await writer.aclose()
    assert await store.count_tasks(CLUSTER) == 3
    gaps = await store.gaps(CLUSTER)
    assert len(gaps) == 1 and gaps[0].start == 1000.0 and gaps[0].reason == "downtime"


async def test_warm_state_restores_tasks_workers_and_types(client, store):
    async with Monitor(client) as monitor:
        writer = HistoryWriter(monitor, store, cluster=CLUSTER, interval=0.05)
        await writer.start()
        for i in range(5):
            await life(client, "w1@h", f"t{i}", fail=i == 2)
        await monitor.wait_for(lambda: len(monitor.state.tasks) == 5, DEADLINE)
        await writer.aclose()
    state = State(max_tasks_in_memory=3)
    loaded = warm_state(state, await store.recent_tasks(CLUSTER, 3), await store.workers(CLUSTER))
    assert loaded == 3
    assert set(state.tasks.data) == {"t2", "t3", "t4"}
    failed = state.tasks["t2"]
    assert failed.state == "FAILURE" and "ValueError" in failed.traceback
    assert failed.worker is state.workers["w1@h"]
    assert state.task_types() == ["proj.add"]
    assert [t.uuid for _, t in state.tasks_by_time()] == ["t4", "t3", "t2"]
    assert {t.uuid for t in state.tasks_by_type["proj.add"]} == {"t2", "t3", "t4"}
    # New events keep merging into a warmed task as into any other.
    state.event({"type": "task-retried", "uuid": "t2", "hostname": "w1@h",
                 "timestamp": failed.timestamp + 1, "local_received": failed.timestamp + 1,
                 "clock": 99})  # fmt: skip
    assert state.tasks["t2"].state == "RETRY"


async def test_a_reconnect_is_stored_as_a_gap(client, store):
    async with Monitor(client) as monitor:
        writer = HistoryWriter(monitor, store, cluster=CLUSTER, interval=0.05)
        await writer.start()
        await life(client, "w1@h", "before")
        await monitor.wait_for(lambda: "before" in monitor.state.tasks, DEADLINE)
        seen = monitor.state.tasks["before"].local_received
        # What the receiver does when its subscription comes back (the reliability suite
        # drives real broker restarts; here only the writer's reaction is under test).
        monitor.receiver.gaps += 1
        await life(client, "w1@h", "after")
        await monitor.wait_for(lambda: "after" in monitor.state.tasks, DEADLINE)
        await writer.aclose()
    (gap,) = await store.gaps(CLUSTER)
    assert gap.reason == "reconnect"
    assert seen <= gap.start < gap.end <= monitor.state.tasks["after"].local_received
