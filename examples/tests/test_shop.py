"""The shop's tasks on a real Celery worker, on Redis and on RabbitMQ.

Every test runs twice (``aiocelerymon_broker`` is parametrized over both brokers), each time
in a Redis database / RabbitMQ vhost of its own, so the tests can also run in parallel.
"""

from __future__ import annotations

import asyncio

import pytest
from celery import Celery
from shop.health import missing_workers

from aiocelerymon import Client
from aiocelerymon.testing import BrokerNamespace, FakeWorker, collect_events, wait_for_workers

pytestmark = pytest.mark.asyncio


async def send(broker: BrokerNamespace, name: str, *args: object, **kwargs: object) -> str:
    """Send a task the way the shop's web process does (Celery's blocking client, in a thread)."""

    def send_now() -> str:
        producer = Celery("shop-web", broker=broker.url, set_as_current=False)
        producer.conf.broker_transport_options = broker.transport_options
        producer.conf.task_send_sent_event = True
        try:
            return str(producer.send_task(name, args, kwargs).id)
        finally:
            producer.close()

    return await asyncio.to_thread(send_now)


async def test_total_runs_on_a_real_worker(
    celery_worker_process, aiocelerymon_client: Client, aiocelerymon_broker: BrokerNamespace
) -> None:
    worker = await celery_worker_process("shop.celery_app", concurrency=1)
    async with collect_events(aiocelerymon_client) as events:
        ok = await send(aiocelerymon_broker, "shop.total", [10.0, 5.5], discount=0.1)
        bad = await send(aiocelerymon_broker, "shop.total", [1.0], discount=2)
        task = await events.wait_for_task_state(ok, "SUCCESS", timeout=30)
        failed = await events.wait_for_task_state(bad, "FAILURE", timeout=30)
    assert task.result == "13.95"
    assert task.worker.hostname == worker.hostname
    assert "discount must be in [0, 1)" in failed.exception
    # task-sent comes from the producer's connection: it may arrive after the worker's events.
    types = events.types(ok)
    assert sorted(types) == ["task-received", "task-sent", "task-started", "task-succeeded"]
    assert [t for t in types if t != "task-sent"] == [
        "task-received",
        "task-started",
        "task-succeeded",
    ]


async def test_health_check_sees_real_workers_come_and_go(
    celery_worker_process, aiocelerymon_client: Client
) -> None:
    one = await celery_worker_process("shop.celery_app", hostname="one@shop")
    two = await celery_worker_process("shop.celery_app", hostname="two@shop", queues=["slow"])
    assert await wait_for_workers(aiocelerymon_client, 2) == ["one@shop", "two@shop"]
    assert await missing_workers(aiocelerymon_client, {"one@shop", "two@shop"}) == set()
    queues = await aiocelerymon_client.control.inspect(destination=[two.hostname]).active_queues()
    assert [q["name"] for q in queues[two.hostname]] == ["slow"]
    one.process.terminate()  # a warm shutdown, as on a deploy
    await asyncio.to_thread(one.process.wait, 30)
    assert await missing_workers(aiocelerymon_client, {"one@shop", "two@shop"}) == {"one@shop"}


async def test_health_check_without_celery(aiocelerymon_client: Client) -> None:
    # A fake worker answers remote control like a real one: no Celery process needed.
    async with FakeWorker(aiocelerymon_client, "fake@shop", registered=["shop.total"]):
        assert await missing_workers(aiocelerymon_client, {"fake@shop", "gone@shop"}) == {
            "gone@shop"
        }
