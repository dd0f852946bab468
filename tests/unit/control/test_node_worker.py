"""Issue 12: a Node that Flower can fully drive, with a worker's answers (memory broker).

One clock per client, the ``heartbeat`` wake-up, revokes, ``stats``/``conf``/``active_queues``,
rate limits, pool and consumers, and the logged refusal of a remote shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiocelerymon import Client
from aiocelerymon.control.node import Node, queue_info
from aiocelerymon.control.revoked import RevokedSet
from tests.unit.control.test_node import NODE, NodeFactory, call, mine
from tests.unit.control.test_node import broker_name as broker_name
from tests.unit.control.test_node import client as client
from tests.unit.control.test_node import make_node as make_node

DEADLINE = 5.0


@pytest.fixture
async def events(client: Client) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event on the client's broker, as it arrives."""
    seen: list[dict[str, Any]] = []
    receiver = client.events.receiver(handlers={"*": seen.append})
    capture = asyncio.ensure_future(receiver.capture(wakeup=False))
    await asyncio.wait_for(receiver.ready.wait(), DEADLINE)
    yield seen
    capture.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await capture


async def until(predicate: Any) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.01)


# -- item 2: one Lamport clock per client --


async def test_the_node_and_the_dispatcher_tick_one_clock(
    client: Client, make_node: NodeFactory, events: list[dict[str, Any]]
) -> None:
    assert client.mailbox.clock is client.clock is client.events.clock
    dispatcher = client.events.dispatcher(NODE)
    assert dispatcher.clock is client.clock
    node = make_node(dispatcher=dispatcher)
    await node.start()
    for _ in range(30):
        await dispatcher.send("worker-custom")
    await until(lambda: len([e for e in events if e["type"] == "worker-custom"]) == 30)
    sent = max(e["clock"] for e in events if e["type"] == "worker-custom")
    stats = mine(await client.control.inspect([NODE], timeout=DEADLINE).stats())
    # A real worker: stats.clock just above its events' clock (one app.clock).
    assert int(stats["clock"]) > sent >= 30


# -- item 3: heartbeat wake-up --


async def test_the_heartbeat_command_sends_a_heartbeat_event_at_once(
    client: Client, make_node: NodeFactory, events: list[dict[str, Any]]
) -> None:
    dispatcher = client.events.dispatcher(NODE, freq=60.0)
    node = make_node(dispatcher=dispatcher)
    await node.start()
    assert await call(client, "heartbeat") is None
    await until(lambda: any(e["type"] == "worker-heartbeat" for e in events))
    (beat,) = [e for e in events if e["type"] == "worker-heartbeat"]
    assert beat["hostname"] == NODE and beat["freq"] == 60.0
    assert {"active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"} <= set(beat)


# -- item 4: revoke --


async def test_revoke_flags_ids_as_a_worker_does(client: Client, make_node: NodeFactory) -> None:
    node = make_node(revoked=["old"])
    await node.start()
    assert await call(client, "revoke", {"task_id": "t1"}) == {
        "ok": "tasks {'t1'} flagged as revoked"
    }
    reply = await client.control.revoke(["t2", "t3"], [NODE], reply=True, timeout=DEADLINE)
    text = reply[0][NODE]["ok"]
    assert text in (
        "tasks {'t2', 't3'} flagged as revoked",
        "tasks {'t3', 't2'} flagged as revoked",
    )
    assert node.is_revoked("t1") and node.is_revoked("t3") and not node.is_revoked("t4")
    assert mine(await client.control.inspect([NODE], timeout=DEADLINE).revoked()) == [
        "old", "t1", *sorted(["t2", "t3"], key=list(node.revoked).index)
    ]  # fmt: skip
    assert await call(client, "dump_revoked") == list(node.revoked)


async def test_revoke_terminate_calls_back_for_running_tasks(
    client: Client, make_node: NodeFactory
) -> None:
    calls: list[tuple[str, str]] = []

    async def on_terminate(task_id: str, signal: str) -> None:
        calls.append((task_id, signal))

    running = [{"id": "run1", "name": "svc.job"}]
    node = make_node(active=lambda: running, on_terminate=on_terminate)
    await node.start()
    reply = await call(client, "revoke", {"task_id": ["run1", "idle"], "terminate": True})
    assert reply == {"ok": "terminate: run1"}
    assert calls == [("run1", "SIGTERM")]
    reply = await call(client, "revoke", {"task_id": "idle", "terminate": True, "signal": "KILL"})
    assert reply == {"ok": "terminate: tasks unknown"}
    assert await call(client, "terminate", {"signal": "KILL", "task_id": "run1"}) == {
        "ok": "terminate: run1"
    }
    assert calls[-1] == ("run1", "SIGKILL")
    assert node.is_revoked("idle") and node.is_revoked("run1")


async def test_revoke_by_stamped_headers(client: Client, node: Node) -> None:
    reply = await call(client, "revoke_by_stamped_headers", {"headers": {"mtask_id": "m1"}})
    assert reply == {"ok": "headers {'mtask_id': 'm1'} flagged as revoked, but not terminated"}
    reply = await call(client, "revoke_by_stamped_headers", {"headers": ["mtask_id=m2"]})
    assert reply["ok"].endswith("flagged as revoked, but not terminated")
    assert node.revoked_stamps == {"mtask_id": ["m1", "m2"]}
    assert node.is_revoked("any", stamps={"mtask_id": "m2"})
    assert node.is_revoked("any", stamps={"mtask_id": ["x", "m1"]})
    assert not node.is_revoked("any", stamps={"mtask_id": "m3"})
    assert not node.is_revoked("any")


def test_the_revoked_set_has_celerys_limit_and_expiry() -> None:
    now = [0.0]
    revoked = RevokedSet(maxlen=3, expires=10.0, clock=lambda: now[0])
    for task_id in ("a", "b", "c"):
        revoked.add(task_id)
        now[0] += 1
    assert list(revoked) == ["a", "b", "c"]
    revoked.add("a")  # again: the newest now
    assert list(revoked) == ["b", "c", "a"]
    now[0] = 5.0
    revoked.add("d")  # full: the oldest goes
    assert list(revoked) == ["c", "a", "d"]
    now[0] = 13.5  # c (t=2) and a (t=3) are past 10 s, d (t=5) is not
    assert "c" in revoked  # membership alone never ages an id out (LimitedSet)
    revoked.purge()
    assert list(revoked) == ["d"]
    with pytest.raises(ValueError):
        RevokedSet(maxlen=-1)


def test_the_revoked_limits_come_from_celerys_environment_variables() -> None:
    code = (
        "from aiocelerymon.control import revoked as r; "
        "print(r.REVOKES_MAX, r.REVOKE_EXPIRES, r.RevokedSet().maxlen)"
    )
    env = {**os.environ, "CELERY_WORKER_REVOKES_MAX": "7", "CELERY_WORKER_REVOKE_EXPIRES": "9"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["7", "9.0", "7"]
    default = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_WORKER_REVOKE")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=default, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["50000", "10800.0", "50000"]


# -- item 5: stats, conf, active_queues --


async def test_conf_shows_what_the_node_knows_and_declares_without_secrets(
    broker_name: str, make_node: NodeFactory
) -> None:
    options = {"global_keyprefix": "p:", "sentinel_kwargs": {"password": "hush"}, "token": "t"}
    async with Client(f"memory://u:s3cret@{broker_name}", broker_transport_options=options) as c:
        node = make_node(on=c, config={"worker_concurrency": 8, "beat": object(), "__x": 1})
        await node.start()
        conf = mine(await c.control.inspect([NODE], timeout=DEADLINE).conf())
        stats = mine(await c.control.inspect([NODE], timeout=DEADLINE).stats())
    text = json.dumps([conf, stats])
    assert "s3cret" not in text and "hush" not in text and '"t"' not in text
    assert conf["broker_url"].startswith(f"memory://u:********@{broker_name}")
    assert conf["worker_concurrency"] == 8  # the service's declaration wins
    assert conf["beat"].startswith("<object object")  # Celery's safe_repr for the rest
    assert "__x" not in conf
    assert conf["broker_transport_options"] == {"global_keyprefix": "p:", "sentinel_kwargs": {}}
    assert stats["broker"]["transport_options"] == conf["broker_transport_options"]


async def test_active_queues_and_consumers(client: Client, make_node: NodeFactory) -> None:
    node = make_node(queues=["celery", {"name": "hipri", "exchange": "ex", "durable": False}])
    await node.start()
    queues = await call(client, "active_queues")
    assert queues == [queue_info("celery"), queue_info("hipri", "ex", durable=False)]
    assert queues[0]["exchange"]["name"] == "celery" and queues[1]["durable"] is False
    reply = await client.control.add_consumer("bulk", destination=[NODE], reply=True)
    assert reply == [{NODE: {"ok": "add consumer bulk"}}]
    reply = await client.control.cancel_consumer("celery", destination=[NODE], reply=True)
    assert reply == [{NODE: {"ok": "no longer consuming from celery"}}]
    assert list(node.queues) == ["hipri", "bulk"]
    assert [q["name"] for q in await call(client, "active_queues")] == ["hipri", "bulk"]


async def test_pool_grow_and_shrink(client: Client, make_node: NodeFactory) -> None:
    node = make_node(pool_size=2)
    await node.start()
    assert await call(client, "pool_grow", {"n": 3}) == {"ok": "pool will grow"}
    assert (node.pool_size, node.prefetch_count) == (5, 20)
    assert await call(client, "pool_shrink") == {"ok": "pool will shrink"}
    stats = await call(client, "stats")
    assert stats["pool"]["max-concurrency"] == 4 and stats["prefetch_count"] == 16
    assert stats["pool"]["writes"]["inqueues"]["total"] == 4
    assert "error" in await call(client, "pool_shrink", {"n": 4})
    assert node.pool_size == 4


async def test_rate_and_time_limits(client: Client, make_node: NodeFactory) -> None:
    node = make_node(registered={"svc.add": {"rate_limit": "5/s"}, "svc.sub": {}})
    await node.start()
    assert await call(client, "rate_limit", {"task_name": "svc.sub", "rate_limit": "10/m"}) == {
        "ok": "new rate limit set successfully"
    }
    assert await call(client, "rate_limit", {"task_name": "svc.add", "rate_limit": None}) == {
        "ok": "rate limit disabled successfully"
    }
    bad = await call(client, "rate_limit", {"task_name": "svc.add", "rate_limit": "x/y"})
    assert bad["error"].startswith("Invalid rate limit string: ValueError(")
    unknown = await call(client, "rate_limit", {"task_name": "nope", "rate_limit": "1/s"})
    assert unknown == {"error": "unknown task"}
    assert node.rate_limits == {"svc.add": None, "svc.sub": "10/m"}
    assert await call(client, "registered") == ["svc.add", "svc.sub [rate_limit=10/m]"]
    args = {"task_name": "svc.add", "soft": 10, "hard": 20}
    assert await call(client, "time_limit", args) == {"ok": "time limits set successfully"}
    assert node.time_limits == {"svc.add": (10, 20)}


# -- item 6: a refused shutdown is logged --


async def test_a_refused_shutdown_is_logged_with_the_requesters_reply_to(
    client: Client, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="aiocelerymon.control.node"):
        reply = await call(client, "shutdown")
    assert reply["error"].startswith("shutdown refused")
    (record,) = [r for r in caplog.records if "refused a remote shutdown" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert client.mailbox.oid in record.getMessage()  # our reply_to routing key
    assert node.serving


@pytest.fixture
async def node(make_node: NodeFactory) -> Node:
    n = make_node()
    await n.start()
    return n
