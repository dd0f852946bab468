"""/api/tasks and /api/task/info answer from the store for tasks no longer in memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import aiocelerymon
from aiocelerymon.pipeline import Monitor
from aiocelerymon.pipeline.history import History, HistoryWriter
from aiocelerymon.store import Batch, Gap
from aiocelerymon.store.sqlite import SQLiteStore
from aiocelerymon.web import create_app
from tests.support.store_contract import T0, task

CLUSTER = "memory://web-history"
DEADLINE = 10.0


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Any, Monitor, History]]:
    store = SQLiteStore(tmp_path / "h.sqlite3")
    await store.open()
    old = [
        task(f"old-{i}", cluster=CLUSTER, timestamp=T0 + i, received=T0 + i,
             name="proj.old" if i % 2 else "proj.add", state="FAILURE" if i == 3 else "SUCCESS",
             exception="KeyError('gone')" if i == 3 else None,
             traceback="Traceback (most recent call last):\nKeyError: 'gone'" if i == 3 else None)
        for i in range(6)
    ]  # fmt: skip
    await store.write(Batch(tasks=old))
    await store.add_gap(Gap(CLUSTER, T0 + 100, T0 + 200, "downtime"))
    async with aiocelerymon.Client(f"memory://web-hist-{uuid.uuid4().hex}") as client:
        monitor = Monitor(client, max_tasks=100)
        writer = HistoryWriter(monitor, store, cluster=CLUSTER, interval=0.05)
        history = History(store, CLUSTER, writer)
        await writer.start()
        await monitor.start()
        app = create_app(monitor, history=history)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
            d = client.events.dispatcher("w1@h")
            await d.send("task-received", uuid="live-1", name="proj.add", args="(1,)",
                         kwargs="{}")  # fmt: skip
            await d.flush()
            await monitor.wait_for(lambda: "live-1" in monitor.state.tasks, DEADLINE)
            yield http, monitor, history
        await writer.aclose()
        await monitor.aclose()
    await store.aclose()


async def test_tasks_merge_memory_and_store(setup):
    http, monitor, _ = setup
    body = (await http.get("/api/tasks")).json()
    assert list(body) == ["live-1", "old-5", "old-4", "old-3", "old-2", "old-1", "old-0"]
    assert body["live-1"]["state"] == "RECEIVED" and body["live-1"]["worker"] == "w1@h"
    assert body["old-3"]["traceback"].endswith("KeyError: 'gone'")
    assert set(body["old-3"]) == set(body["live-1"])  # the same shape as a live task
    page = (await http.get("/api/tasks", params={"limit": 2, "offset": 1})).json()
    assert list(page) == ["old-5", "old-4"]
    named = await http.get("/api/tasks", params={"taskname": "proj.add"})
    assert list(named.json()) == ["live-1", "old-4", "old-2", "old-0"]
    failed = await http.get("/api/tasks", params={"state": "FAILURE"})
    assert list(failed.json()) == ["old-3"]
    found = await http.get("/api/tasks", params={"search": "gone"})
    assert list(found.json()) == ["old-3"]
    ordered = await http.get("/api/tasks", params={"sort_by": "received", "limit": 3})
    assert list(ordered.json()) == ["old-0", "old-1", "old-2"]
    newest = await http.get("/api/tasks", params={"sort_by": "-received", "limit": 2})
    assert list(newest.json()) == ["live-1", "old-5"]
    assert "old-0" not in monitor.state.tasks  # answered from the store indeed


async def test_task_info_and_timeline_from_the_store(setup):
    http, _, history = setup
    info = await http.get("/api/task/info/old-3")
    assert info.status_code == 200
    assert info.json()["exception"] == "KeyError('gone')"
    assert (await http.get("/api/task/info/nope")).status_code == 404
    await history.writer.wait_flushed(DEADLINE)
    timeline = (await http.get("/api/task/events/live-1")).json()
    assert [e["type"] for e in timeline["events"]] == ["task-received"]
    assert (await http.get("/api/task/events/nope")).status_code == 404
    about = (await http.get("/api/history")).json()
    assert about["tasks"] == 7 and about["cluster"] == CLUSTER
    assert about["gaps"] == [{"start": T0 + 100, "end": T0 + 200, "reason": "downtime"}]
    assert about["writer"]["tasks_written"] >= 1


async def test_without_history_nothing_changes():
    url = f"memory://web-nohist-{uuid.uuid4().hex}"
    async with aiocelerymon.Client(url) as client, Monitor(client) as monitor:
        transport = httpx2.ASGITransport(app=create_app(monitor))
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/api/tasks")).json() == {}
            assert (await http.get("/api/history")).json() == {"store": None}
            assert (await http.get("/api/task/events/x")).status_code == 404
