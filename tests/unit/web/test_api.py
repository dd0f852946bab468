"""The web app on the in-memory broker: real Monitor, real pidbox Nodes, real HTTP (ASGI).

What real Celery workers cannot be made to do on demand is checked here: a node that refuses,
a node that never answers, no live worker at all. The interop module checks the rest against
real workers and the real Flower.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import aiocelerymon
from aiocelerymon.control import Node
from aiocelerymon.demo import DemoWorker
from aiocelerymon.pipeline import Monitor
from aiocelerymon.web import create_app
from aiocelerymon.web.app import normalize_prefix
from aiocelerymon.wire.entities import Binding
from aiocelerymon.wire.task import task_exchange

DEADLINE = 10.0


class App:
    def __init__(self, client: aiocelerymon.Client, monitor: Monitor, http: httpx.AsyncClient):
        self.client = client
        self.monitor = monitor
        self.http = http


@pytest.fixture
async def web() -> AsyncIterator[App]:
    async with aiocelerymon.Client(f"memory://web-{uuid.uuid4().hex}") as client:
        monitor = Monitor(client)
        await monitor.start()
        app = create_app(monitor, inspect_timeout=0.5, url_prefix="/flower")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/flower") as http:
            try:
                yield App(client, monitor, http)
            finally:
                await monitor.aclose()


async def demo(web: App, name: str) -> DemoWorker:
    worker = DemoWorker(web.client, name)
    await worker.start()
    await web.monitor.wait_for(lambda: name in web.monitor.state.workers, DEADLINE)
    return worker


async def test_prefix_health_and_openapi(web: App) -> None:
    assert (await web.http.get("/healthcheck")).text == "OK"
    doc = (await web.http.get("/api/openapi.json")).json()
    assert doc["servers"] == [{"url": "/flower"}]
    assert "/api/worker/shutdown/{workername}" in doc["paths"]
    outside = httpx.AsyncClient(transport=web.http._transport, base_url="http://t")
    assert (await outside.get("/api/workers")).status_code == 404
    assert normalize_prefix("flower/") == "/flower" and normalize_prefix("/") == ""
    with pytest.raises(ValueError):
        normalize_prefix("a//b")


async def test_workers_tasks_and_control_on_demo_workers(web: App) -> None:
    w1 = await demo(web, "w1@demo")
    try:
        workers = (await web.http.get("/api/workers", params={"refresh": "1"})).json()
        assert set(workers["w1@demo"]) >= {"stats", "registered", "active_queues", "timestamp"}
        task_id = w1.submit()
        await web.monitor.wait_for(
            lambda: getattr(web.monitor.state.tasks.get(task_id), "ready", False), DEADLINE
        )
        tasks = (await web.http.get("/api/tasks", params={"workername": "w1@demo"})).json()
        assert task_id in tasks and tasks[task_id]["worker"] == "w1@demo"
        limited = await web.http.post(
            "/api/task/rate-limit/" + next(iter(w1.tasks)), data={"ratelimit": "5/s"}
        )
        assert limited.status_code == 200 and w1.rate_limits[next(iter(w1.tasks))] == "5/s"
        unknown = await web.http.post("/api/task/rate-limit/no.such", data={"ratelimit": "5/s"})
        # Every node that answered does not know the task: 404, as Flower's own check.
        assert unknown.status_code == 404
        assert unknown.json()["replies"]["w1@demo"]["error"].startswith("unknown task")
    finally:
        await w1.aclose()


async def test_nobody_answering_is_504_and_each_node_is_reported(web: App) -> None:
    # No live worker at all: a broadcast revoke has nobody to wait for, and says so.
    nobody = await web.http.post("/api/task/revoke/abc")
    assert nobody.status_code == 504 and nobody.json()["replies"] == {}
    # A worker known from its events whose mailbox is gone: no reply, named.
    dispatcher = web.client.events.dispatcher("mute@demo")
    await dispatcher.send("worker-online", freq=2.0)
    await web.monitor.wait_for(lambda: "mute@demo" in web.monitor.state.workers, DEADLINE)
    silent = await web.http.post("/api/worker/pool/grow/mute@demo", data={"n": "2"})
    assert silent.status_code == 504
    assert silent.json()["replies"] == {"mute@demo": None}
    # One answering, one not: 200, and both shown.
    w1 = await demo(web, "w1@demo")
    try:
        both = await web.http.post("/api/task/revoke/xyz")
        assert both.status_code == 200
        replies = both.json()["replies"]
        assert replies["mute@demo"] is None and "ok" in replies["w1@demo"]
        assert "xyz" in w1.revoked
    finally:
        await w1.aclose()


async def test_refusals_are_403_with_the_nodes_reason(web: App) -> None:
    node = Node(web.client, "strict@demo", unique_check_timeout=None)
    node.register("pool_grow", lambda n=1: {"error": f"will not grow by {n}"})
    await node.start()
    await web.client.events.dispatcher("strict@demo").send("worker-online", freq=2.0)
    await web.monitor.wait_for(lambda: "strict@demo" in web.monitor.state.workers, DEADLINE)
    try:
        grow = await web.http.post("/api/worker/pool/grow/strict@demo", data={"n": "3"})
        assert grow.status_code == 403
        assert (
            grow.json()["message"]
            == "Failed to grow 'strict@demo' worker's pool: will not grow by 3"
        )
        # A Node refuses remote shutdown unless allowed: it replies, so we can tell.
        down = await web.http.post("/api/worker/shutdown/strict@demo")
        assert down.status_code == 403 and down.json()["offline"] is False
        bad = await web.http.post("/api/worker/pool/grow/strict@demo", data={"n": "many"})
        assert bad.status_code == 400 and "Invalid argument 'many'" in bad.text
    finally:
        await node.aclose()


async def test_every_control_action_is_audited(web: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiocelerymon.web.audit")
    w1 = await demo(web, "w1@demo")
    try:
        await web.http.post("/api/task/revoke/t%0Dforged=1")
    finally:
        await w1.aclose()
    [record] = [r for r in caplog.records if r.name == "aiocelerymon.web.audit"]
    line = record.getMessage()
    assert "user='anonymous'" in line and "action='task.revoke'" in line
    assert "w1@demo=" in line and "\r" not in line  # a control character cannot forge a line


async def test_send_task_validates_and_publishes(web: App) -> None:
    binding = Binding(task_exchange(), routing_key="celery", queue=f"celery-{uuid.uuid4().hex}")
    async with web.client.transport.subscribe(binding) as queue:
        ok = await web.http.post(
            "/api/task/send-task/proj.add", json={"args": [1, 2], "kwargs": {"z": 3}}
        )
        assert ok.status_code == 200
        delivery = await queue.receive()
    task_id = ok.json()["task-id"]
    assert delivery.headers["id"] == task_id and delivery.headers["task"] == "proj.add"
    assert delivery.headers["argsrepr"] == "(1, 2)"
    for body in ({"args": "x"}, {"kwargs": []}, [1], {"bogus": 1}, {"priority": 999}):
        bad = await web.http.post("/api/task/send-task/proj.add", json=body)
        assert bad.status_code == 400, body
    assert (await web.http.post("/api/task/send-task/proj.add", content=b"{")).status_code == 400


async def test_tasks_query_errors_are_400(web: App) -> None:
    cases: list[dict[str, Any]] = [
        {"sort_by": "color"}, {"search": "ab"}, {"search": "NOT x"}, {"search": '"open'},
        {"search": "((((((abc))))))"}, {"received_start": "today"}, {"limit": "1e9"},
        {"offset": "-"},
    ]  # fmt: skip
    for params in cases:
        reply = await web.http.get("/api/tasks", params=params)
        assert reply.status_code == 400, params
