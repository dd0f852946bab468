"""Broker restarts and network cuts, on dedicated RabbitMQ and Redis servers.

Each fault is applied while a monitor holds an event stream, a control call is in flight and
a node (our own pidbox :class:`~aiocelerymon.Node`, on its own connection) serves commands.
What must hold afterwards: subscriptions came back by themselves, the event stream resumed
and reported the gap, the call in flight ended by its deadline without being re-sent, the
next call works, and each connection logged the outage once (no ERROR line from anyone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon import Client, ConnectionLostError, Node, RetryPolicy, create_transport
from aiocelerymon.events import EventReceiver, StreamGap
from aiocelerymon.transports import TransportBase, TransportState
from aiocelerymon.wire import names
from aiocelerymon.wire.event import event, event_message
from tests.integration.reliability.servers import restartable_redis
from tests.support.proxy import Proxy

pytestmark = [pytest.mark.integration]

FAST = RetryPolicy(initial=0.05, maximum=0.5)
CALL_TIMEOUT = 6.0
DEADLINE = 60.0  # RabbitMQ takes ~5 s to come back on an idle machine, more on a busy one
CELERYEV = names.event_exchange()


async def until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll client-side state that has no event of its own, with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class Fault:
    """A broker and a way to take it away and bring it back."""

    kind: str
    url: str  # what the monitor under test connects to
    direct_url: str  # what the node and the publisher use
    down: Callable[[], Awaitable[None]]
    up: Callable[[], Awaitable[None]]


@pytest.fixture(params=["redis-restart", "redis-cut", "amqp-restart", "amqp-cut"])
async def fault(request: pytest.FixtureRequest) -> AsyncIterator[Fault]:
    broker, how = request.param.split("-")
    stack = contextlib.AsyncExitStack()
    async with stack:
        if broker == "redis":
            request.applymarker(pytest.mark.redis)
            server: Any = stack.enter_context(restartable_redis())
        else:
            request.applymarker(pytest.mark.amqp)
            server = request.getfixturevalue("own_rabbit")
        if how == "restart":
            yield Fault(
                broker,
                server.url,
                server.url,
                lambda: asyncio.to_thread(server.stop),
                lambda: asyncio.to_thread(server.start),
            )
        else:
            proxy = await stack.enter_async_context(Proxy(server.port))
            scheme = "redis" if broker == "redis" else "amqp"
            path = "/0" if broker == "redis" else "//"
            creds = "" if broker == "redis" else "guest:guest@"

            async def down() -> None:
                proxy.refusing = True
                proxy.cut()  # no goodbye on the wire: only the sockets die

            async def up() -> None:
                proxy.refusing = False

            yield Fault(
                broker, f"{scheme}://{creds}127.0.0.1:{proxy.port}{path}", server.url, down, up
            )


async def test_fault_while_streaming_calling_and_serving(
    fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    nodename = f"rel-{uuid.uuid4().hex[:6]}@faults"
    client = Client(fault.url, retry=FAST, broker_connection_timeout=2.0)
    node_client = Client(fault.direct_url, retry=FAST, broker_connection_timeout=2.0)
    publisher = create_transport(fault.direct_url, retry=FAST, connect_timeout=2.0)
    requests: list[str] = []
    gate = asyncio.Event()

    async def slow() -> dict[str, str]:
        requests.append("slow")
        await gate.wait()
        return {"ok": "late"}

    node = Node(node_client, nodename, unique_check_timeout=None)
    node.register("slow", slow)
    receiver = EventReceiver(client.transport, client.event_settings)
    items: asyncio.Queue[Any] = asyncio.Queue()

    async def monitor() -> None:
        async for item in receiver.itercapture(wakeup=False, gaps=True):
            await items.put(item)

    async def next_item() -> Any:
        async with asyncio.timeout(DEADLINE):
            return await items.get()

    async def publish_event(n: int) -> None:
        ev = event("worker-heartbeat", hostname=f"celery@{n}", clock=n)
        await publisher.publish(event_message(ev, "x"), CELERYEV, "worker.heartbeat")

    await publisher.connect()
    await node.start()
    watcher = asyncio.create_task(monitor())
    try:
        async with asyncio.timeout(DEADLINE):
            await receiver.ready.wait()
        await publish_event(1)
        assert (await next_item())["hostname"] == "celery@1"

        call = asyncio.create_task(
            client.control.broadcast(
                "slow", reply=True, destination=[nodename], timeout=CALL_TIMEOUT
            )
        )
        await until(lambda: requests == ["slow"], "the node to receive the call")
        await fault.down()
        # The call fails with a connection error, before its deadline: had it waited for the
        # deadline it would have returned Replies (with the node missing), not raised.
        async with asyncio.timeout(CALL_TIMEOUT + 5):
            with pytest.raises(ConnectionLostError, match="not re-sent"):
                await call
        await fault.up()

        # Everything comes back by itself; the next call works.
        async with asyncio.timeout(DEADLINE):
            while True:
                with contextlib.suppress(ConnectionLostError):
                    replies = await client.control.ping(destination=[nodename], timeout=1.0)
                    if replies:
                        break
        assert replies[0] == {nodename: {"ok": "pong"}}
        # The event stream resumed, and said that it may have lost events.
        n = 2
        async with asyncio.timeout(DEADLINE):
            while True:
                with contextlib.suppress(ConnectionLostError):
                    await publish_event(n)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        item = await items.get()
                        break
                n += 1
        assert isinstance(item, StreamGap)
        assert receiver.gaps == 1
        assert (await next_item())["hostname"].startswith("celery@")
        # The request that was in flight was never sent again.
        gate.set()
        assert requests == ["slow"]
        assert node.serving
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await node.aclose()
        await client.aclose()
        await node_client.aclose()
        await publisher.aclose()
    # One WARNING per connection that saw the outage (the monitor's, the node's; an idle
    # publisher may only notice on its next publish), however many attempts the outage took.
    hit = 3 if fault.url == fault.direct_url else 1
    ours = [r for r in caplog.records if r.name == "aiocelerymon.transport"]
    lost = [r for r in ours if "lost" in r.msg]
    back = [r for r in ours if r.msg.startswith("reconnected")]
    assert 1 <= len(lost) <= hit, [r.getMessage() for r in lost]
    assert all(r.levelno == logging.WARNING for r in lost)
    assert len(back) == len(lost)
    # No ERROR from anyone, and nothing from the drivers: the outage was reported above.
    noisy = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR or (r.name.startswith("aiormq") and r.levelno > logging.INFO)
    ]
    assert not noisy, [f"{r.name}: {r.getMessage()}" for r in noisy]


async def test_monitor_started_while_the_broker_is_down(
    fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiocelerymon.transport")
    await fault.down()
    transport: TransportBase = create_transport(fault.url, retry=FAST, connect_timeout=1.0)
    receiver = EventReceiver(transport)
    first: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def monitor() -> None:
        await transport.connect(retry=True)
        async for ev in receiver.itercapture(wakeup=False):
            if not first.done():
                first.set_result(ev)  # type: ignore[arg-type]

    def attempts() -> int:
        return sum("connect attempt" in r.msg for r in caplog.records)

    task = asyncio.create_task(monitor())
    publisher = create_transport(fault.direct_url, retry=FAST)
    try:
        await until(lambda: attempts() >= 3, "several connect attempts")
        assert transport.state is TransportState.CONNECTING
        await fault.up()
        async with asyncio.timeout(DEADLINE):
            await receiver.ready.wait()
        await publisher.connect(retry=True)
        ev = event("worker-online", hostname="celery@late", clock=1)
        await publisher.publish(event_message(ev, "x"), CELERYEV, "worker.online")
        async with asyncio.timeout(DEADLINE):
            assert (await first)["hostname"] == "celery@late"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await transport.aclose()
        await publisher.aclose()
    visible = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(visible) == 1, [r.getMessage() for r in visible]
    assert visible[0].levelno == logging.WARNING and "retrying" in visible[0].getMessage()
    assert "guest:guest" not in caplog.text
