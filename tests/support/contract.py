"""One contract, every transport: the behaviour protocol code relies on, broker by broker.

Subclass :class:`TransportContract` in a test module and provide:

* a fixture ``make_transport`` returning ``async (**options) -> TransportBase``: a *connected*
  transport on the broker under test (the fixture closes them all at teardown). Options are
  passed through to the adapter (e.g. ``connect_timeout``).
* ``async def force_disconnect(self, transport)``: sever the transport's connections from the
  broker side (kill the client connections), so the adapter must reconnect by itself.

Names are unique per test, so the suite can share one broker with anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from aiocelerymon.exceptions import ClosedError, ConnectionLostError, EndOfSubscription
from aiocelerymon.transports import (
    Binding,
    Delivery,
    Exchange,
    ExchangeKind,
    Message,
    QueueDepth,
    SubscriptionBase,
    TransportBase,
    TransportState,
)

MakeTransport = Callable[..., Awaitable[TransportBase]]
DEADLINE = 10.0

T = TypeVar("T", bound=TransportBase)


@contextlib.asynccontextmanager
async def connected(build: Callable[..., T]) -> AsyncIterator[Callable[..., Awaitable[T]]]:
    """A factory of connected transports made by ``build(**options)``, all closed at exit."""
    made: list[T] = []

    async def make(*args: Any, **options: Any) -> T:
        t = build(*args, **options)
        made.append(t)
        await t.connect()
        return t

    try:
        yield make
    finally:
        for t in made:
            await t.aclose()


def uid() -> str:
    return uuid.uuid4().hex[:12]


async def receive(sub: SubscriptionBase, timeout: float = DEADLINE) -> Delivery:
    async with asyncio.timeout(timeout):
        return await sub.receive()


def msg(body: bytes, **kw: Any) -> Message:
    return Message(body=body, **kw)


class TransportContract:
    """The contract every adapter passes: routing, round trip, cleanup, close, reconnect."""

    async def force_disconnect(self, transport: TransportBase) -> None:
        raise NotImplementedError

    # -- routing -----------------------------------------------------------------------------

    async def test_direct_routes_by_routing_key(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex = Exchange(f"t.direct.{uid()}", ExchangeKind.DIRECT)
        async with (
            t.subscribe(Binding(ex, routing_key="a")) as a,
            t.subscribe(Binding(ex, routing_key="b")) as b,
        ):
            await t.publish(msg(b'"to-a"'), ex, "a")
            await t.publish(msg(b'"to-b"'), ex, "b")
            await t.publish(msg(b'"to-nobody"'), ex, "c")
            assert (await receive(a)).body == b'"to-a"'
            assert (await receive(b)).body == b'"to-b"'
            # Whatever arrives next on `a` must be the marker, not the unroutable message.
            await t.publish(msg(b'"marker"'), ex, "a")
            assert (await receive(a)).body == b'"marker"'

    async def test_fanout_reaches_every_subscriber(self, make_transport: MakeTransport) -> None:
        pub, t1, t2 = await make_transport(), await make_transport(), await make_transport()
        ex = Exchange(f"t.fanout.{uid()}", ExchangeKind.FANOUT)
        async with t1.subscribe(Binding(ex)) as s1, t2.subscribe(Binding(ex)) as s2:
            assert s1.queue != s2.queue
            await pub.publish(msg(b'{"n": 1}'), ex, "")
            assert (await receive(s1)).body == b'{"n": 1}'
            assert (await receive(s2)).body == b'{"n": 1}'

    async def test_topic_patterns(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex = Exchange(f"t.topic.{uid()}", ExchangeKind.TOPIC, durable=True)
        async with (
            t.subscribe(Binding(ex, routing_key="#")) as everything,
            t.subscribe(Binding(ex, routing_key="worker.#")) as workers,
            t.subscribe(Binding(ex, routing_key="task.*")) as tasks,
        ):
            await t.publish(msg(b"1"), ex, "task.multi")
            await t.publish(msg(b"2"), ex, "worker.heartbeat")
            got = [(await receive(everything)).routing_key for _ in range(2)]
            assert sorted(got) == ["task.multi", "worker.heartbeat"]
            w = await receive(workers)
            assert (w.body, w.routing_key, w.exchange) == (b"2", "worker.heartbeat", ex.name)
            assert (await receive(tasks)).routing_key == "task.multi"
            # Neither narrow binding got the other's message: the next thing is a fresh one.
            await t.publish(msg(b"3"), ex, "worker.offline")
            await t.publish(msg(b"4"), ex, "task.sent")
            assert (await receive(workers)).body == b"3"
            assert (await receive(tasks)).body == b"4"

    # -- message fidelity --------------------------------------------------------------------

    async def test_message_round_trip(self, make_transport: MakeTransport) -> None:
        pub, sub_t = await make_transport(), await make_transport()
        ex = Exchange(f"t.rt.{uid()}", ExchangeKind.DIRECT)
        headers = {
            "ticket": str(uuid.uuid4()),
            "clock": 42,
            "expires": 1767225601.5,
            "flag": True,
            "nothing": None,
            "hostname": "celery@h\u00e9te",
        }
        body = '{"celery@host1": {"ok": "pong \u2713"}}'.encode()
        async with sub_t.subscribe(Binding(ex, routing_key="rk")) as sub:
            await pub.publish(
                Message(body, "application/json", "utf-8", headers, delivery_mode=2, priority=0),
                ex,
                "rk",
            )
            d = await receive(sub)
        assert d.body == body
        assert (d.content_type, d.content_encoding) == ("application/json", "utf-8")
        assert dict(d.headers) == headers
        assert type(d.headers["clock"]) is int
        assert type(d.headers["expires"]) is float
        assert (d.exchange, d.routing_key) == (ex.name, "rk")
        assert d.delivery_mode == 2
        assert d.generation == 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def test_exclusive_queue_is_gone_after_close(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex = Exchange(f"t.excl.{uid()}", ExchangeKind.DIRECT)
        name = f"t.q.{uid()}"
        binding = Binding(ex, routing_key="k", queue=name, exclusive=True, expires=10.0)
        async with t.subscribe(binding) as sub:
            assert sub.queue == name
        # Nothing is bound any more: this message is dropped, not kept for a later consumer.
        await t.publish(msg(b'"lost"'), ex, "k")
        async with t.subscribe(binding) as again:
            await t.publish(msg(b'"fresh"'), ex, "k")
            assert (await receive(again)).body == b'"fresh"'

    async def test_aclose_ends_subscriptions(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex = Exchange(f"t.close.{uid()}", ExchangeKind.FANOUT)
        sub = await t.subscribe(Binding(ex)).start()
        waiter = asyncio.ensure_future(sub.receive())
        await asyncio.sleep(0)  # let the waiter block: the point is ending a *pending* receive
        await t.aclose()
        with pytest.raises(EndOfSubscription):
            await asyncio.wait_for(waiter, DEADLINE)
        assert [d async for d in sub] == []
        assert t.state is TransportState.CLOSED
        await t.aclose()  # idempotent
        with pytest.raises(ClosedError):
            await t.publish(msg(b"x"), ex)
        with pytest.raises(ClosedError):
            t.subscribe(Binding(ex))
        assert "CLOSED" in repr(t)

    async def test_subscription_close_ends_iteration(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex = Exchange(f"t.iter.{uid()}", ExchangeKind.FANOUT)
        sub = await t.subscribe(Binding(ex)).start()
        await t.publish(msg(b"1"), ex)
        seen: list[bytes] = []
        async with asyncio.timeout(DEADLINE):
            async for d in sub:
                seen.append(d.body)
                await sub.aclose()
        assert seen == [b"1"]
        await sub.aclose()  # idempotent
        # The transport itself is still usable.
        async with t.subscribe(Binding(ex)) as other:
            await t.publish(msg(b"2"), ex)
            assert (await receive(other)).body == b"2"

    async def test_cancelled_receive_loses_nothing(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex = Exchange(f"t.cancel.{uid()}", ExchangeKind.FANOUT)
        async with t.subscribe(Binding(ex)) as sub:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await sub.receive()
            await t.publish(msg(b"after"), ex)
            assert (await receive(sub)).body == b"after"

    # -- reconnect ---------------------------------------------------------------------------

    async def test_reconnect_restores_subscriptions_and_bumps_generation(
        self, make_transport: MakeTransport
    ) -> None:
        pub, t = await make_transport(), await make_transport()
        ex = Exchange(f"t.reco.{uid()}", ExchangeKind.FANOUT)
        async with t.subscribe(Binding(ex)) as sub:
            await pub.publish(msg(b"before"), ex)
            assert (await receive(sub)).generation == 0
            await self.force_disconnect(t)
            # Publish until the restored subscription hears us: a gap is allowed, silence is not.
            async with asyncio.timeout(30):
                while True:
                    # The publisher may have been cut too; it reconnects by itself.
                    with contextlib.suppress(ConnectionLostError):
                        await pub.publish(msg(b"after"), ex)
                    try:
                        d = await receive(sub, timeout=0.5)
                    except TimeoutError:
                        continue
                    if d.generation >= 1:
                        break
            assert d.body == b"after"
            assert sub.generation >= 1
            # A restored consumer may deliver before the reconnect loop marks the transport up.
            await t.wait_connected(DEADLINE)
            assert t.state is TransportState.CONNECTED

    # -- task queues (queue_depth / purge_queue) ----------------------------------------------

    async def _kept_queue(self, t: TransportBase) -> tuple[Exchange, str]:
        """A durable, kept queue (like a Celery task queue) with no consumer left on it."""
        ex = Exchange(f"t.tasks.{uid()}", ExchangeKind.DIRECT, durable=True)
        name = f"t.taskq.{uid()}"
        binding = Binding(ex, "work", queue=name, exclusive=False, durable=True, auto_delete=False)
        async with t.subscribe(binding) as sub:
            depth = await t.queue_depth(name)
            assert depth is not None and depth.messages == 0
            # Redis cannot see BRPOP consumers: unknown (None), never a wrong number.
            assert depth.consumers in (None, 1)
            assert sub.queue == name
        return ex, name

    async def test_queue_depth_counts_waiting_messages(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex, name = await self._kept_queue(t)
        for priority in (0, 0, 5, 9):  # spread over kombu's Redis priority lists
            await t.publish(msg(b'"task"', delivery_mode=2, priority=priority), ex, "work")
        depth = await self._depth_reaches(t, name, 4)
        assert depth.name == name
        assert depth.consumers in (None, 0)

    @staticmethod
    async def _depth_reaches(t: TransportBase, name: str, messages: int) -> QueueDepth:
        """The queue's depth once it reports ``messages``: publishes are unconfirmed (as in
        kombu), so RabbitMQ may count a message a moment after our publish call returned."""
        async with asyncio.timeout(DEADLINE):
            while True:
                depth = await t.queue_depth(name)
                assert depth is not None
                if depth.messages >= messages:
                    assert depth.messages == messages
                    return depth
                await asyncio.sleep(0.01)

    async def test_missing_queue_is_none(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        missing = f"t.missing.{uid()}"
        assert await t.queue_depth(missing) is None
        assert await t.purge_queue(missing) is None
        # The transport is still fine after the broker said "not found".
        ex, name = await self._kept_queue(t)
        await t.publish(msg(b"1", delivery_mode=2), ex, "work")
        await self._depth_reaches(t, name, 1)

    async def test_purge_removes_waiting_messages(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex, name = await self._kept_queue(t)
        for priority in (0, 3, 6):
            await t.publish(msg(b'"task"', delivery_mode=2, priority=priority), ex, "work")
        await self._depth_reaches(t, name, 3)
        assert await t.purge_queue(name) == 3
        depth = await t.queue_depth(name)
        assert depth is not None and depth.messages == 0
        assert await t.purge_queue(name) == 0
        # The queue still routes: a new message is waiting after the purge.
        await t.publish(msg(b'"after"', delivery_mode=2), ex, "work")
        await self._depth_reaches(t, name, 1)

    # -- get with manual acknowledgement (migrate) -------------------------------------------

    async def test_get_ack_requeue_and_properties(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        name = f"t.getq.{uid()}"
        await t.ensure_queue(name)
        await t.ensure_queue(name)  # idempotent, leaves it as it is
        props = {"correlation_id": "c-1", "reply_to": "r.q", "message_id": "m-1"}
        sent = [
            msg(b'{"n": %d}' % n, delivery_mode=2, headers={"task": "t.x", "n": n},
                properties=props)
            for n in range(3)
        ]  # fmt: skip
        for m in sent:
            await t.publish(m, Exchange("", ExchangeKind.DIRECT), name)
        await self._depth_reaches(t, name, 3)
        first = await t.get(name)
        assert first is not None and first.malformed is None
        d = first.delivery
        assert (d.body, d.content_type, d.content_encoding) == (b'{"n": 0}', "application/json",
                                                               "utf-8")  # fmt: skip
        assert d.headers == {"task": "t.x", "n": 0}
        assert (d.delivery_mode, d.routing_key) == (2, name)
        assert {k: d.properties.get(k) for k in props} == props
        assert not d.redelivered
        # Taken is not gone: held until settled, and not handed out twice meanwhile.
        second = await t.get(name)
        assert second is not None and second.delivery.body == b'{"n": 1}'
        await first.ack()
        await second.requeue()
        again = await t.get(name)
        assert again is not None and again.delivery.body in (b'{"n": 1}', b'{"n": 2}')
        await again.ack()
        last = await t.get(name)
        assert last is not None
        await last.ack()
        assert {again.delivery.body, last.delivery.body} == {b'{"n": 1}', b'{"n": 2}'}
        assert await t.get(name) is None
        depth = await t.queue_depth(name)
        assert depth is not None and depth.messages == 0

    async def test_get_prefers_higher_priority(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        ex, name = await self._kept_queue(t)
        await t.publish(msg(b'"low"', delivery_mode=2, priority=0), ex, "work")
        await t.publish(msg(b'"high"', delivery_mode=2, priority=9), ex, "work")
        await self._depth_reaches(t, name, 2)
        bodies = []
        while (got := await t.get(name)) is not None:
            bodies.append((got.delivery.body, got.delivery.priority))
            await got.ack()
        assert sorted(bodies) == [(b'"high"', 9), (b'"low"', 0)]

    async def test_get_from_a_missing_queue_is_none(self, make_transport: MakeTransport) -> None:
        t = await make_transport()
        assert await t.get(f"t.missing.{uid()}") is None
        # The transport is still usable.
        ex, name = await self._kept_queue(t)
        await t.publish(msg(b"1", delivery_mode=2), ex, "work")
        await self._depth_reaches(t, name, 1)
        got = await t.get(name)
        assert got is not None
        await got.ack()

    async def test_unsettled_messages_come_back_after_the_getter_is_gone(
        self, make_transport: MakeTransport
    ) -> None:
        taker, other = await make_transport(), await make_transport()
        ex, name = await self._kept_queue(taker)
        await taker.publish(msg(b'"held"', delivery_mode=2), ex, "work")
        await self._depth_reaches(taker, name, 1)
        held = await taker.get(name)
        assert held is not None
        await taker.aclose()  # as if the process died before acknowledging
        async with asyncio.timeout(DEADLINE):
            while (back := await other.get(name)) is None:
                await asyncio.sleep(0.01)  # RabbitMQ requeues once it noticed the close
        assert back.delivery.body == b'"held"'
        assert back.delivery.redelivered
        await back.ack()
        assert await other.get(name) is None
