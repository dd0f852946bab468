"""The Monitor and its hub on the in-memory broker: real dispatchers and Nodes, no stubs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiocelerymon
from aiocelerymon.control import Node
from aiocelerymon.events import State
from aiocelerymon.pipeline import EventFilter, Hub, Lagged, Monitor
from aiocelerymon.transports import Message
from aiocelerymon.wire import names

DEADLINE = 10.0


@pytest.fixture
async def client() -> AsyncIterator[aiocelerymon.Client]:
    async with aiocelerymon.Client(f"memory://pipe-{uuid.uuid4().hex}") as c:
        yield c


@pytest.fixture
async def monitor(client: aiocelerymon.Client) -> AsyncIterator[Monitor]:
    async with Monitor(client, max_tasks=1000) as m:
        yield m


async def send_task_life(client: aiocelerymon.Client, host: str, task_id: str, name: str) -> None:
    d = client.events.dispatcher(host)
    await d.send("task-received", uuid=task_id, name=name, args="(1,)", kwargs="{}")
    await d.send("task-started", uuid=task_id)
    await d.send("task-succeeded", uuid=task_id, result="2", runtime=0.1)
    await d.flush()


async def test_state_listeners_and_subscribers_see_every_event(client, monitor):
    seen: list[tuple[str, str | None]] = []

    def listener(event: dict[str, Any], state: State) -> None:
        # Called after the State applied the event: the task is already in it.
        task = state.tasks.get(event.get("uuid"))
        seen.append((event["type"], task.state if task is not None else None))

    monitor.add_listener(listener)
    async with monitor.subscribe() as sub:
        await send_task_life(client, "w1@h", "t1", "proj.add")
        await monitor.wait_for(lambda: len(seen) >= 3, DEADLINE)
        got = [await asyncio.wait_for(sub.get(), DEADLINE) for _ in range(3)]
    assert seen == [
        ("task-received", "RECEIVED"),
        ("task-started", "STARTED"),
        ("task-succeeded", "SUCCESS"),
    ]
    assert [e["type"] for e in got if isinstance(e, dict)] == [s for s, _ in seen]
    assert monitor.state.tasks["t1"].result == "2"
    stats = monitor.stats
    assert stats.events >= 3 and stats.ready and stats.listener_errors == 0
    assert stats.last_event_lag is not None and stats.last_event_lag < 60


async def test_a_failing_listener_is_counted_and_never_stops_ingestion(client, monitor):
    calls: list[str] = []

    def bad(event: dict[str, Any], state: State) -> None:
        raise RuntimeError("boom")

    monitor.add_listener(bad)
    remove = monitor.add_listener(lambda e, s: calls.append(e["type"]))
    await send_task_life(client, "w1@h", "t2", "proj.add")
    await monitor.wait_for(lambda: len(calls) >= 3, DEADLINE)
    assert monitor.stats.listener_errors == 3
    assert monitor.state.tasks["t2"].state == "SUCCESS"
    remove()
    await send_task_life(client, "w1@h", "t3", "proj.add")
    await monitor.wait_for(lambda: monitor.state.tasks.get("t3") is not None, DEADLINE)
    await monitor.wait_for(lambda: monitor.state.tasks["t3"].state == "SUCCESS", DEADLINE)
    assert len(calls) == 3  # removed listeners are not called


async def test_malformed_and_refused_events_are_counted_not_fatal(client, monitor):
    exchange = names.event_exchange()
    await client.transport.publish(Message(b"\xff not json"), exchange, "task.multi")
    refused = {"type": "task-received", "hostname": "w1@h", "timestamp": 1.0}  # no uuid
    await client.transport.publish(Message(json.dumps(refused).encode()), exchange, "task.x")
    calls: list[str] = []
    monitor.add_listener(lambda e, s: calls.append(e["type"]))
    await send_task_life(client, "w1@h", "t4", "proj.ok")
    await monitor.wait_for(lambda: len(calls) >= 3, DEADLINE)
    assert monitor.state.tasks["t4"].state == "SUCCESS"
    assert calls == ["task-received", "task-started", "task-succeeded"]  # refused: no listener
    assert (monitor.stats.malformed, monitor.stats.rejected) == (1, 1)
    assert monitor.running


async def test_filters_by_type_worker_name_and_state(client, monitor):
    subs = {
        "types": monitor.subscribe(filter=EventFilter(types=["task-succeeded"])),
        "glob": monitor.subscribe(filter=EventFilter(types=["worker-*"])),
        "worker": monitor.subscribe(filter=EventFilter(workers=["w2@*"])),
        "name": monitor.subscribe(filter=EventFilter(task_names=["proj.mul"])),
        "state": monitor.subscribe(filter=EventFilter(states=["started"])),
        "and": monitor.subscribe(filter=EventFilter(workers=["w1@h"], task_names=["proj.mul"])),
    }
    await send_task_life(client, "w1@h", "a", "proj.add")
    await send_task_life(client, "w2@h", "b", "proj.mul")
    await client.events.dispatcher("w1@h").send("worker-heartbeat", freq=2.0)
    await monitor.wait_for(
        lambda: "w1@h" in monitor.state.workers and monitor.state.workers["w1@h"].freq == 2.0,
        DEADLINE,
    )
    await monitor.wait_for(
        lambda: "b" in monitor.state.tasks and monitor.state.tasks["b"].state == "SUCCESS", DEADLINE
    )

    def drain(name: str) -> list[tuple[str, Any]]:
        out = []
        while (item := subs[name].get_nowait()) is not None:
            assert isinstance(item, dict)
            out.append((item["type"], item.get("uuid") or item.get("hostname")))
        return out

    assert drain("types") == [("task-succeeded", "a"), ("task-succeeded", "b")]
    assert ("worker-heartbeat", "w1@h") in drain("glob")
    assert {u for _, u in drain("worker")} == {"b"}
    assert drain("name") == [("task-received", "b"), ("task-started", "b"), ("task-succeeded", "b")]
    # The state is the task's state after the event (a page's view), not the event type.
    assert drain("state") == [("task-started", "a"), ("task-started", "b")]
    assert drain("and") == []


async def test_a_stalled_subscriber_loses_nothing_of_the_state_and_resumes(client, monitor):
    stalled = monitor.subscribe(maxsize=5)
    live = monitor.subscribe(maxsize=10_000)
    d = client.events.dispatcher("w1@h")
    ids = [f"s{i}" for i in range(200)]
    for tid in ids:
        await d.send("task-received", uuid=tid, name="proj.add")
    await d.flush()
    await monitor.wait_for(lambda: all(t in monitor.state.tasks for t in ids), DEADLINE)
    got_live = []
    while (item := live.get_nowait()) is not None:
        got_live.append(item)
    assert [e["uuid"] for e in got_live if isinstance(e, dict)] == ids  # nothing lost
    first = stalled.get_nowait()
    assert isinstance(first, Lagged)
    rest = []
    while (item := stalled.get_nowait()) is not None:
        rest.append(item)
    assert all(isinstance(e, dict) for e in rest)
    assert first.missed + len(rest) == len(ids)
    assert [e["uuid"] for e in rest] == ids[-len(rest) :]  # the newest are kept
    assert stalled.missed == first.missed and monitor.stats.missed == first.missed
    # It resumes: the next event is delivered with no second notice.
    await d.send("task-started", uuid="s0")
    await d.flush()
    item = await asyncio.wait_for(stalled.get(), DEADLINE)
    assert isinstance(item, dict) and item["type"] == "task-started"


def test_hub_lagged_counts_are_exact_across_repeated_overflows():
    hub, state = Hub(), State()
    sub = hub.subscribe(maxsize=3)
    for i in range(10):
        hub.publish({"type": "worker-heartbeat", "n": i}, state)
    items = []
    while (item := sub.get_nowait()) is not None:
        items.append(item)
    assert isinstance(items[0], Lagged)
    events = [e["n"] for e in items[1:] if isinstance(e, dict)]
    assert items[0].missed + len(events) == 10
    assert events == list(range(10 - len(events), 10))
    assert len(items) <= 3 + 1
    with pytest.raises(ValueError, match="maxsize"):
        hub.subscribe(maxsize=0)


def test_a_failing_filter_skips_that_subscriber_only():
    hub, state = Hub(), State()
    broken = hub.subscribe(filter=lambda e, s: 1 / 0 > 0)
    fine = hub.subscribe()
    hub.publish({"type": "worker-online"}, state)
    assert broken.get_nowait() is None and fine.get_nowait() == {"type": "worker-online"}
    assert hub.filter_errors == 1


async def test_closing_ends_subscriptions(client):
    m = Monitor(client)
    await m.start()
    sub = m.subscribe()
    consumer = asyncio.create_task(anext(sub, None))
    await asyncio.sleep(0)
    await m.aclose()
    assert await asyncio.wait_for(consumer, DEADLINE) is None
    assert not m.running
    late = m.subscribe()
    assert await anext(late, None) is None
    with pytest.raises(RuntimeError):
        await m.start()


def test_options_are_validated(client: Any = None):
    c = aiocelerymon.Client("memory://validate")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_tasks"):
            Monitor(c, max_tasks=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="purge_offline_workers"):
        Monitor(c, purge_offline_workers=0)


async def test_purge_drops_only_workers_offline_longer_than_the_window(client):
    async with Monitor(client, purge_offline_workers=60) as m:
        gone = client.events.dispatcher("gone@h")
        await gone.send("worker-online", freq=2.0)
        await gone.send("worker-offline")
        await client.events.dispatcher("up@h").send("worker-heartbeat", freq=2.0)
        await m.wait_for(lambda: {"gone@h", "up@h"} <= set(m.state.workers), DEADLINE)
        await m.wait_for(lambda: not m.state.workers["gone@h"].alive, DEADLINE)
        assert m.purge() == []  # offline, but not for long
        assert m.purge(now=time.time() + 61) == ["gone@h"]
        assert set(m.state.workers) == {"up@h"} and m.stats.purged_workers == 1


class CountingNode:
    """A real pidbox Node that counts the enable_events requests it answers."""

    def __init__(self, client: aiocelerymon.Client, name: str) -> None:
        self.calls = 0
        self.node = Node(client, name, unique_check_timeout=None)
        self.node.register("enable_events", self._enable)
        self._called = asyncio.Condition()

    async def _enable(self) -> dict[str, str]:
        async with self._called:
            self.calls += 1
            self._called.notify_all()
        return {"ok": "task events enabled"}

    async def called(self, n: int) -> None:
        async with asyncio.timeout(DEADLINE), self._called:
            await self._called.wait_for(lambda: self.calls >= n)


async def test_enable_events_once_at_start_and_once_per_new_silent_worker(client):
    old = CountingNode(client, "old@h")
    await old.node.start()
    m = Monitor(client, enable_events=True)
    m.enable_events_timeout = 0.5
    try:
        await m.start()
        await old.called(1)
        await m.wait_for(lambda: m.stats.enable_events_sent == 1, DEADLINE)  # start phase over
        new = CountingNode(client, "new@h")
        await new.node.start()
        d = client.events.dispatcher("new@h")
        await d.send("worker-online", freq=2.0)
        await new.called(1)
        # A worker that already sends task events is not asked.
        busy = CountingNode(client, "busy@h")
        await busy.node.start()
        await send_task_life(client, "busy@h", "e1", "proj.add")
        await client.events.dispatcher("busy@h").send("worker-heartbeat", freq=2.0)
        for _ in range(3):  # more heartbeats from known workers: no more casts
            await d.send("worker-heartbeat", freq=2.0)
        await client.events.dispatcher("old@h").send("worker-heartbeat", freq=2.0)
        await m.wait_for(lambda: getattr(m.state.workers.get("busy@h"), "freq", 0) == 2.0, DEADLINE)
        await m.wait_for(lambda: m.state.workers.get("old@h") is not None, DEADLINE)
        # Every node answers a ping only after the requests before it (one mailbox, in order).
        await client.control.ping(timeout=1.0, expected=["old@h", "new@h", "busy@h"])
        assert (old.calls, new.calls, busy.calls) == (1, 1, 0)
        assert m.stats.enable_events_sent == 2
        # A restart (offline, then online again) is a new worker: asked once more.
        await d.send("worker-offline")
        await d.send("worker-online", freq=2.0)
        await new.called(2)
    finally:
        await m.aclose()
        for n in ("old", "new", "busy"):
            node = locals().get(n)
            if node is not None:
                await node.node.aclose()
