"""The remote-control client's own semantics on real brokers (no Celery worker needed).

The same scenarios as ``tests/unit/control/test_client.py`` (total deadline, early finish,
``limit``/``expected``/``missing``/``duplicates``, 1000 concurrent calls on one reply queue), run
against RabbitMQ and Redis with the pidbox responder defined there, plus what only a real broker
shows: what a cancelled call or a closed client leaves behind (Redis binding members and reply
lists, RabbitMQ queues and consumers), connection errors on a closed port, and a connection
killed by the broker while a call is waiting.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon import Client, ConnectError, ConnectionLostError, RetryPolicy
from aiocelerymon.control import Replies
from aiocelerymon.wire import names
from aiocelerymon.wire.kombu_redis import RedisNaming
from tests.support.brokers import RabbitServer, RedisServer, free_port
from tests.unit.control.test_client import (
    LONG,
    Nodes,
    open_tickets,
    returns_within,
    running_nodes,
    scenario_cancel_before_publish,
    scenario_cancel_while_waiting,
    scenario_duplicates,
    scenario_early_finish,
    scenario_errors_are_data,
    scenario_limit_expected_missing,
    scenario_many_concurrent_calls,
    scenario_total_deadline,
)

pytestmark = [pytest.mark.integration]

FAST_RETRY = RetryPolicy(initial=0.05, maximum=0.5)


@dataclass(frozen=True)
class Variant:
    id: str
    broker: str
    db: int = 0
    namespace: str = names.CONTROL_EXCHANGE
    transport_options: dict[str, Any] | None = None


VARIANTS = [
    pytest.param(Variant("redis", "redis"), marks=pytest.mark.redis, id="redis"),
    pytest.param(
        Variant(
            "redis-prefix",
            "redis",
            db=4,
            namespace="sem",
            transport_options={"global_keyprefix": "sem:"},
        ),
        marks=pytest.mark.redis,
        id="redis-db4-prefix",
    ),
    pytest.param(Variant("amqp", "amqp"), marks=pytest.mark.amqp, id="amqp"),
]


@dataclass
class Bed:
    """One broker variant: how to connect, and how to see what a client left behind."""

    variant: Variant
    url: str
    redis: RedisServer | None = None
    rabbit: RabbitServer | None = None

    def client(self, **options: Any) -> Client:
        transport_options = {**(self.variant.transport_options or {}), **options}
        return Client(
            self.url,
            control_exchange=self.variant.namespace,
            broker_transport_options=transport_options or None,
            retry=FAST_RETRY,
        )

    def nodes(self) -> Any:
        return running_nodes(
            self.url,
            namespace=self.variant.namespace,
            transport_options=self.variant.transport_options,
            retry=FAST_RETRY,
        )

    async def leftovers(self, oid: str) -> list[str]:
        """Everything on the broker that still names our reply routing key ``oid``."""
        if self.redis is not None:
            return await self._redis_leftovers(oid)
        return await asyncio.to_thread(self._rabbit_leftovers, oid)

    async def _redis_leftovers(self, oid: str) -> list[str]:
        from redis.asyncio import Redis

        naming = RedisNaming.from_options(self.variant.db, self.variant.transport_options or {})
        exchange = names.reply_exchange(self.variant.namespace).name
        found: list[str] = []
        async with Redis.from_url(self.url) as r:
            for table in (naming.binding_key(exchange), naming.permanent_key(exchange)):
                for member in await r.smembers(table):
                    if oid.encode() in member:
                        found.append(f"binding member {member!r} in {table!r}")
            async for key in r.scan_iter(match=f"*{oid}*"):
                found.append(f"key {key!r}")
        return found

    def _rabbit_leftovers(self, oid: str) -> list[str]:
        assert self.rabbit is not None
        queues = self.rabbit.rabbitmqctl("list_queues", "-q", "name")
        consumers = self.rabbit.rabbitmqctl("list_consumers", "-q", "queue_name")
        return [f"queue {line}" for line in queues.splitlines() if oid in line] + [
            f"consumer on {line}" for line in consumers.splitlines() if oid in line
        ]

    async def kill_connections(self, client: Client, name: str) -> int:
        """Make the broker drop every connection of ``client`` (named ``name``)."""
        if self.redis is not None:
            from redis.asyncio import Redis

            killed = 0
            async with Redis.from_url(self.url) as r:
                for info in await r.client_list():
                    if info.get("name") == name:
                        killed += await r.client_kill_filter(_id=info["id"])
            return killed
        return await asyncio.to_thread(self._close_rabbit_connections, name)

    def _close_rabbit_connections(self, name: str) -> int:
        assert self.rabbit is not None
        listing = self.rabbit.rabbitmqctl(
            "list_connections", "-q", "--no-table-headers", "pid", "client_properties"
        )
        closed = 0
        for line in listing.splitlines():
            pid, _, properties = line.partition("\t")
            if f'"{name}"' in properties:  # the connection_name client property
                self.rabbit.rabbitmqctl("close_connection", pid, "aiocelerymon test")
                closed += 1
        return closed


@pytest.fixture(params=VARIANTS)
def bed(request: pytest.FixtureRequest) -> Bed:
    variant: Variant = request.param
    if variant.broker == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        return Bed(variant, redis.url_for(variant.db), redis=redis)
    rabbit: RabbitServer = request.getfixturevalue("rabbit_server")
    return Bed(variant, rabbit.url, rabbit=rabbit)


@pytest.fixture
async def nodes(bed: Bed) -> AsyncIterator[Nodes]:
    async with bed.nodes() as n:
        yield n


@pytest.fixture
async def client(bed: Bed) -> AsyncIterator[Client]:
    async with bed.client() as c:
        yield c


async def assert_nothing_left(bed: Bed, client: Client) -> None:
    oid = client.mailbox.oid
    await client.aclose()
    assert await bed.leftovers(oid) == []


# --------------------------------------------------------------------------------------------
# The unit scenarios, on the real brokers


async def test_early_finish(client: Client, nodes: Nodes) -> None:
    await scenario_early_finish(client, nodes)


async def test_total_deadline_with_a_slow_stream_of_replies(client: Client, nodes: Nodes) -> None:
    await scenario_total_deadline(client, nodes)


async def test_limit_expected_missing(client: Client, nodes: Nodes) -> None:
    await scenario_limit_expected_missing(client, nodes)


async def test_duplicate_node_names(
    client: Client, nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    await scenario_duplicates(client, nodes, caplog)


async def test_error_replies_are_data(client: Client, nodes: Nodes) -> None:
    await scenario_errors_are_data(client, nodes)


async def test_1000_concurrent_calls_get_their_own_replies(
    bed: Bed, client: Client, nodes: Nodes
) -> None:
    await scenario_many_concurrent_calls(client, nodes)
    await assert_nothing_left(bed, client)


# --------------------------------------------------------------------------------------------
# Cancellation: nothing left behind on the broker


async def test_reply_queue_exists_while_open_and_goes_with_aclose(
    bed: Bed, client: Client, nodes: Nodes
) -> None:
    await nodes.add("q@sem")
    await returns_within(client.control.ping(destination=["q@sem"], timeout=LONG))
    oid = client.mailbox.oid
    assert await bed.leftovers(oid) != []  # the check can see our reply queue
    await assert_nothing_left(bed, client)


async def test_cancel_before_publish(bed: Bed, client: Client, nodes: Nodes) -> None:
    await scenario_cancel_before_publish(client, nodes)
    await assert_nothing_left(bed, client)


async def test_cancel_while_waiting_drops_the_late_reply(
    bed: Bed, client: Client, nodes: Nodes
) -> None:
    await scenario_cancel_while_waiting(client, nodes)
    await assert_nothing_left(bed, client)


async def test_cancel_many_calls_while_waiting(bed: Bed, client: Client, nodes: Nodes) -> None:
    gate = asyncio.Event()
    slow = await nodes.add("many@sem", gate=gate)
    calls = [
        asyncio.create_task(
            client.control.inspect(destination=["many@sem"], timeout=LONG).call("echo", n=i)
        )
        for i in range(50)
    ]
    await returns_within(slow.wait_received(50))  # all published; every call is waiting
    for call in calls:
        call.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert open_tickets(client) == 0
    gate.set()
    await returns_within(slow.wait_sent(50))
    # Every late reply was dropped by the mailbox; none reached the next call.
    assert await returns_within(
        client.control.inspect(destination=["many@sem"], timeout=LONG).call("echo", n="next")
    ) == {"many@sem": {"echo": {"n": "next"}}}
    assert client.mailbox.dropped == 50
    await assert_nothing_left(bed, client)


# --------------------------------------------------------------------------------------------
# Broker down


@pytest.mark.parametrize(
    "scheme",
    [
        pytest.param("redis://:s3cret-pw@127.0.0.1:{port}/0", marks=pytest.mark.redis, id="redis"),
        pytest.param(
            "amqp://guest:s3cret-pw@127.0.0.1:{port}//", marks=pytest.mark.amqp, id="amqp"
        ),
    ],
)
async def test_closed_port_raises_connect_error_before_the_deadline(scheme: str) -> None:
    url = scheme.format(port=free_port())
    client = Client(url)
    try:
        with pytest.raises(ConnectError) as info:
            await returns_within(client.control.ping(timeout=LONG))
        text = f"{info.value} {info.value!r} {info.value.__cause__!r}"
        assert "s3cret-pw" not in text
        assert "127.0.0.1" in str(info.value)
        with pytest.raises(ConnectError):
            await returns_within(client.control.inspect(timeout=LONG).stats())
        with pytest.raises(ConnectError):
            async with Client(url):
                pass
    finally:
        await client.aclose()


async def test_connection_killed_while_waiting(bed: Bed, nodes: Nodes) -> None:
    """The broker drops our connections mid-call (Redis CLIENT KILL, rabbitmqctl close).

    The call raises ``ConnectionLostError`` at once rather than waiting out its timeout (far
    beyond this test's deadline): replies sent while the reply queue was gone are lost. It is
    never re-sent; the transport restores the reply queue and the next call works.
    """
    name = f"aiocm-sem-{uuid.uuid4().hex[:8]}"
    option = "client_name" if bed.variant.broker == "redis" else "connection_name"
    gate = asyncio.Event()
    await nodes.add("fast@sem")
    slow = await nodes.add("gated@sem", gate=gate)
    fast_answered = asyncio.Event()

    def on_reply(reply: dict[str, Any]) -> None:
        if "fast@sem" in reply:
            fast_answered.set()

    async with bed.client(**{option: name}) as client:
        call = asyncio.create_task(
            client.control.broadcast(
                "ping",
                reply=True,
                destination=["fast@sem", "gated@sem"],
                timeout=LONG * 10,
                callback=on_reply,
            )
        )
        await slow.wait_received(1)
        await fast_answered.wait()
        assert await bed.kill_connections(client, name) >= 1
        with pytest.raises(ConnectionLostError, match="not re-sent"):
            await returns_within(call)
        gate.set()
        again = await returns_within(
            retry_until_connected(
                lambda: client.control.ping(destination=["fast@sem", "gated@sem"], timeout=LONG)
            )
        )
        assert len(again) == 2 and again.complete
        assert len(slow.received) == 2  # the failed call's request was not re-sent


async def retry_until_connected(call: Callable[[], Awaitable[Replies]]) -> Replies:
    """Right after a drop a call may still find the connection down; the client recovers."""
    while True:
        try:
            return await call()
        except ConnectionLostError:
            continue
