"""Cancellation at every phase, through a proxy that delays what the client sends.

With every client->broker chunk held back, a call spends measurable time connecting,
declaring/subscribing its reply queue, publishing and waiting; cancelling after a sweep of
delays hits each phase. Afterwards: the call next to the cancelled one got its own reply and
nothing else, and once the client (or the event stream) is gone no consumer, queue, binding
member or reply list of ours is left on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from aiocelerymon import Client, Node, RetryPolicy, create_transport
from aiocelerymon.events import EventReceiver
from tests.integration.reliability.servers import RestartableRabbit, restartable_redis
from tests.integration.reliability.test_redis_hygiene import leftovers
from tests.support.proxy import Proxy

pytestmark = [pytest.mark.integration]

CANCEL_AFTER = [0.0, 0.005, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7]
HOLD = 0.04  # seconds each client->broker chunk is held back
DEADLINE = 30.0


@dataclass
class Bed:
    broker: str
    url: str  # through the delaying proxy
    direct_url: str
    server: Any


@pytest.fixture(params=["redis", "amqp"])
async def bed(request: pytest.FixtureRequest) -> AsyncIterator[Bed]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            request.applymarker(pytest.mark.redis)
            server: Any = stack.enter_context(restartable_redis())
            via = "redis://127.0.0.1:{}/0"
        else:
            request.applymarker(pytest.mark.amqp)
            server = request.getfixturevalue("own_rabbit")
            via = "amqp://guest:guest@127.0.0.1:{}//"
        proxy = await stack.enter_async_context(Proxy(server.port))
        proxy.delay = HOLD
        yield Bed(request.param, via.format(proxy.port), server.url, server)


async def ours_left(bed: Bed, node_queue: str) -> list[str]:
    """Queues/consumers (RabbitMQ) or reply lists/members (Redis) other than the node's."""
    if bed.broker == "redis":
        raw = aioredis.Redis.from_url(bed.direct_url)
        try:
            lists, members = await leftovers(raw)
            events = await raw.smembers("_kombu.binding.celeryev")  # type: ignore[misc]
        finally:
            await raw.aclose()
        return [*map(repr, lists), *map(repr, members), *map(repr, events)]
    rabbit: RestartableRabbit = bed.server
    queues = await asyncio.to_thread(rabbit.ctl_json, "list_queues", "name", "consumers")
    consumers = await asyncio.to_thread(rabbit.ctl_json, "list_consumers", "queue_name")
    return [
        *(f"queue {r['name']}" for r in queues if r["name"] != node_queue),
        *(f"consumer {r['queue_name']}" for r in consumers if r["queue_name"] != node_queue),
    ]


async def test_cancelled_calls_and_streams_leave_nothing(bed: Bed) -> None:
    nodename = f"echo-{uuid.uuid4().hex[:6]}@cancel"
    node_client = Client(bed.direct_url)
    node = Node(node_client, nodename, unique_check_timeout=None)

    async def echo(value: str) -> str:
        return value

    node.register("echo", echo)
    await node.start()
    wrong: list[Any] = []
    try:
        for i, after in enumerate(CANCEL_AFTER):
            client = Client(bed.url, retry=RetryPolicy(initial=0.05, maximum=0.2))
            try:

                def call(value: str, on: Client = client) -> asyncio.Task[Any]:
                    request = on.control.broadcast(
                        "echo", {"value": value}, reply=True, destination=[nodename],
                        timeout=DEADLINE,
                    )  # fmt: skip
                    return asyncio.ensure_future(request)

                victim, keep = call(f"victim-{i}"), call(f"keep-{i}")
                await asyncio.sleep(after)
                victim.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    result = await victim
                    wrong += [] if result == [{nodename: f"victim-{i}"}] else [result]
                async with asyncio.timeout(DEADLINE):
                    kept = await keep
                if kept != [{nodename: f"keep-{i}"}]:
                    wrong.append(kept)
            finally:
                await client.aclose()

            # An event stream cancelled at the same point, its transport left open.
            transport = create_transport(bed.url)
            try:
                receiver = EventReceiver(transport)
                stream = asyncio.ensure_future(receiver.capture(wakeup=False))
                await asyncio.sleep(after)
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stream
                left = await ours_left(bed, f"{nodename}.celery.pidbox")
                assert left == [], f"cancelled after {after}s: {left}"
            finally:
                await transport.aclose()
        assert wrong == []
        assert node.serving
    finally:
        await node.aclose()
        await node_client.aclose()
    assert await ours_left(bed, "") == []
