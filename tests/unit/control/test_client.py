"""The async remote-control client's semantics, on the in-memory broker.

What Celery's client does not give and ours promises: a total deadline (kombu's timeout is an
idle gap between replies), an early finish once every addressed or expected node answered,
``missing``/``duplicates``/``complete``, many concurrent calls on one reply queue without
misrouting, clean cancellation, and clear errors when the broker is down. The responder below
answers the way a Celery worker's pidbox does (kombu ``Node.handle_message``); the same scenarios
run on real brokers in ``tests/integration/test_control_semantics.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiocelerymon import Client, ConnectError, ConnectionLostError, RetryPolicy
from aiocelerymon.control import NoReplies
from aiocelerymon.exceptions import ProtocolError
from aiocelerymon.transports import Transport, create_transport
from aiocelerymon.transports.memory import MemoryBroker
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.pidbox import destination_matches, reply_message

#: Long call timeouts: a call that returns inside ``WITHIN`` did so by an event, not a timer.
LONG = 30.0
WITHIN = 10.0
FAST_RETRY = RetryPolicy(initial=0.01, maximum=0.05)


# --------------------------------------------------------------------------------------------
# A pidbox node that answers like a Celery worker (only what these tests need)


@dataclass
class Responder:
    """Consumes ``<node>.<N>.pidbox`` and replies ``{nodename: result}`` with the ticket.

    Commands: ``ping`` -> ``{"ok": "pong"}``, ``echo`` -> ``{"echo": arguments}`` (so a misrouted
    reply is visible), ``drip`` -> one reply every ``arguments["every"]`` seconds under the node
    names ``drip-<i>@<host>`` until stopped (a slow, never-ending stream of replies),
    ``shutdown`` -> no reply, anything else -> ``{"error": "KeyError('<name>')"}``.
    ``gate``: when set, each request waits for it before being answered. ``queue_node`` names
    the node queue differently from the replies (two nodes with one name).
    """

    transport: Transport
    nodename: str
    namespace: str = names.CONTROL_EXCHANGE
    queue_node: str | None = None
    gate: asyncio.Event | None = None
    #: Every request body this node handled, in order.
    received: list[dict[str, Any]] = field(default_factory=list)
    #: Replies sent so far.
    sent: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _clock: LamportClock = field(default_factory=LamportClock)

    async def run(self, ready: asyncio.Event) -> None:
        binding = names.node_binding(self.queue_node or self.nodename, self.namespace)
        backlog: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with self.transport.subscribe(binding) as requests:
            ready.set()
            # Requests are recorded on arrival and answered one at a time, in order (as a
            # Celery worker's pidbox does), so a gated node still counts what is queued.
            answering = asyncio.create_task(self._answer_in_order(backlog))
            try:
                async for delivery in requests:
                    try:
                        body = codec.decode(
                            delivery.body, delivery.content_type, delivery.content_encoding
                        )
                    except ProtocolError:
                        continue
                    self._clock.adjust(int(delivery.headers.get("clock") or 0))
                    if not isinstance(body, dict) or not destination_matches(self.nodename, body):
                        continue
                    async with self._arrived:
                        self.received.append(body)
                        self._arrived.notify_all()
                    backlog.put_nowait(body)
            finally:
                answering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answering

    async def _answer_in_order(self, backlog: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            body = await backlog.get()
            if self.gate is not None:
                await self.gate.wait()
            await self._answer(body)

    async def wait_received(self, count: int) -> None:
        """Wait until this node has handled ``count`` requests."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)

    async def wait_sent(self, count: int) -> None:
        """Wait until this node has sent ``count`` replies."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.sent >= count)

    async def _answer(self, body: dict[str, Any]) -> None:
        method, arguments = body.get("method"), body.get("arguments") or {}
        reply_to = body.get("reply_to")
        if not reply_to or method == "shutdown":
            return
        if method == "drip":
            host = self.nodename.partition("@")[2]
            for i in range(int(arguments.get("count", 1_000_000))):
                await asyncio.sleep(arguments["every"])  # the slow responder being simulated
                await self._reply(f"drip-{i}@{host}", {"seq": i}, body)
            return
        result: Any
        if method == "ping":
            result = {"ok": "pong"}
        elif method == "echo":
            result = {"echo": arguments}
        else:
            result = {"error": f"KeyError({method!r})"}
        await self._reply(self.nodename, result, body)

    async def _reply(self, nodename: str, result: Any, body: dict[str, Any]) -> None:
        message = reply_message(
            nodename, result, ticket=body.get("ticket"), clock=self._clock.forward()
        )
        exchange = names.reply_exchange(self.namespace)
        await self.transport.publish(message, exchange, body["reply_to"]["routing_key"])
        async with self._arrived:
            self.sent += 1
            self._arrived.notify_all()


@dataclass
class Nodes:
    """Responders running in the background, on their own broker connection."""

    transport: Transport
    namespace: str
    responders: dict[str, Responder] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def add(
        self,
        nodename: str,
        *,
        queue_node: str | None = None,
        gate: asyncio.Event | None = None,
    ) -> Responder:
        responder = Responder(
            self.transport, nodename, self.namespace, queue_node=queue_node, gate=gate
        )
        ready = asyncio.Event()
        task = asyncio.create_task(responder.run(ready), name=f"responder-{nodename}")
        self.tasks.append(task)
        ready_wait = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({ready_wait, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready_wait.cancel()
            task.result()  # raises why the responder could not start
        self.responders[queue_node or nodename] = responder
        return responder

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result


@contextlib.asynccontextmanager
async def running_nodes(
    url: str,
    *,
    namespace: str = names.CONTROL_EXCHANGE,
    transport_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> AsyncIterator[Nodes]:
    transport = create_transport(url, transport_options=transport_options, retry=retry)
    async with transport:
        nodes = Nodes(transport, namespace)
        try:
            yield nodes
        finally:
            await nodes.stop()


def open_tickets(client: Client) -> int:
    """Calls the mailbox still routes replies to (internal; 0 when nothing is left behind)."""
    return len(client.mailbox._inboxes)


def reply_queue(client: Client) -> str:
    return names.reply_queue_name(client.mailbox.oid, client.control_settings.control_exchange)


async def returns_within(awaitable: Awaitable[Any], seconds: float = WITHIN) -> Any:
    """The call must end by an event long before its own (long) deadline."""
    async with asyncio.timeout(seconds):
        return await awaitable


# --------------------------------------------------------------------------------------------
# Scenarios, shared with the real-broker tests (tests/integration/test_control_semantics.py)


async def scenario_early_finish(client: Client, nodes: Nodes) -> None:
    a, b = "a@unit", "b@unit"
    await nodes.add(a)
    await nodes.add(b)
    # A known destination: Celery's limit = len(destination) would finish early too.
    replies = await returns_within(client.control.ping(destination=[a, b], timeout=LONG))
    assert sorted(replies, key=str) == [{a: {"ok": "pong"}}, {b: {"ok": "pong"}}]
    assert replies.missing == frozenset() and replies.complete
    # A broadcast to everyone with the expected set (e.g. from heartbeats): Celery cannot.
    flat = await returns_within(client.control.inspect(expected=[a, b], timeout=LONG).ping())
    assert flat == {a: {"ok": "pong"}, b: {"ok": "pong"}}
    assert flat.missing == frozenset()


async def scenario_total_deadline(client: Client, nodes: Nodes) -> None:
    """Replies keep coming every 50 ms forever: an idle-gap timeout would never end."""
    dripper = await nodes.add("dripper@unit")
    replies = await returns_within(
        client.control.broadcast("drip", {"every": 0.05}, reply=True, timeout=1.0)
    )
    assert replies is not None and len(replies) >= 1
    assert all(next(iter(r)).startswith("drip-") for r in replies)
    # The node is still replying after the call ended: the call ended by its deadline.
    await returns_within(dripper.wait_sent(dripper.sent + 1))
    assert dripper.sent > len(replies)


async def scenario_limit_expected_missing(client: Client, nodes: Nodes) -> None:
    names_ = ["n1@unit", "n2@unit", "n3@unit"]
    for n in names_:
        await nodes.add(n)
    two = await returns_within(client.control.broadcast("ping", reply=True, limit=2, timeout=LONG))
    assert two is not None and len(two) == 2
    # expected: ends as soon as those answered, whatever else is out there.
    got = await returns_within(client.control.ping(expected=names_[:2], timeout=LONG))
    assert {"n1@unit", "n2@unit"} <= {n for r in got for n in r}
    assert got.missing == frozenset()
    # A silent expected node is reported missing once the deadline passed.
    ghost = "ghost@unit"
    got = await client.control.ping(expected=[*names_, ghost], timeout=0.5)
    assert {n for r in got for n in r} == set(names_)
    assert got.missing == frozenset({ghost})
    assert not got.complete
    # The same for a destination nobody listens on.
    got = await client.control.ping(destination=[names_[0], ghost], timeout=0.5)
    assert got.missing == frozenset({ghost}) and not got.complete
    assert got == [{names_[0]: {"ok": "pong"}}]
    # Where Celery's Inspect returns None: as falsy and == None, but it still names the missing.
    nobody = await client.control.inspect(destination=[ghost], timeout=0.3).ping()
    assert not nobody and nobody == None  # noqa: E711 - what Celery's callers compare
    assert nobody.missing == frozenset({ghost}) and not nobody.complete


async def scenario_duplicates(
    client: Client, nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    dup = "dup@unit"
    await nodes.add(dup, queue_node="dup-1@unit")
    await nodes.add(dup, queue_node="dup-2@unit")
    with caplog.at_level(logging.WARNING, logger="aiocelerymon.control"):
        replies = await returns_within(client.control.ping(limit=2, timeout=LONG))
    assert replies == [{dup: {"ok": "pong"}}, {dup: {"ok": "pong"}}]
    assert replies.duplicates == frozenset({dup})
    assert "multiple replies from node name: dup@unit" in caplog.text
    flat = await returns_within(client.control.inspect(limit=2, timeout=LONG).ping())
    assert flat == {dup: {"ok": "pong"}} and flat.duplicates == frozenset({dup})


async def scenario_errors_are_data(client: Client, nodes: Nodes) -> None:
    await nodes.add("e@unit")
    replies = await returns_within(
        client.control.broadcast("nosuch", reply=True, expected=["e@unit"], timeout=LONG)
    )
    assert replies == [{"e@unit": {"error": "KeyError('nosuch')"}}]
    assert replies.errors == {"e@unit": "KeyError('nosuch')"}
    flat = await returns_within(client.control.inspect(expected=["e@unit"]).call("nosuch"))
    assert flat is not None and flat.errors == {"e@unit": "KeyError('nosuch')"}


async def scenario_many_concurrent_calls(client: Client, nodes: Nodes, calls: int = 1000) -> None:
    """Each call carries its own token and targets one node: a misroute would show."""
    node_names = [f"c{i}@unit" for i in range(4)]
    for n in node_names:
        await nodes.add(n)

    async def call(i: int) -> tuple[int, Any]:
        node = node_names[i % len(node_names)]
        inspect = client.control.inspect(destination=[node], timeout=LONG)
        return i, (node, await inspect.call("echo", token=i))

    # Warm up first: with the reply queue in place nothing serialises the calls, and all of
    # them publish at once.
    _, (node, flat) = await call(-1)
    assert flat == {node: {"echo": {"token": -1}}}
    results = await returns_within(asyncio.gather(*(call(i) for i in range(calls))), 60)
    for i, (node, flat) in results:
        assert flat == {node: {"echo": {"token": i}}}, i
        assert flat.missing == frozenset() and flat.duplicates == frozenset()
    assert open_tickets(client) == 0


async def scenario_cancel_while_waiting(client: Client, nodes: Nodes) -> None:
    """A cancelled call's late reply is dropped and never reaches the next call."""
    gate = asyncio.Event()
    slow = await nodes.add("slow@unit", gate=gate)
    first = asyncio.create_task(
        client.control.inspect(destination=["slow@unit"], timeout=LONG).call("echo", token=1)
    )
    await slow.wait_received(1)  # published, and the node has it: we are waiting for replies
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert open_tickets(client) == 0
    dropped = client.mailbox.dropped
    second = asyncio.create_task(
        client.control.inspect(destination=["slow@unit"], timeout=LONG).call("echo", token=2)
    )
    gate.set()  # the node answers the cancelled call first (in order), then the second
    assert await returns_within(second) == {"slow@unit": {"echo": {"token": 2}}}
    assert client.mailbox.dropped == dropped + 1
    assert open_tickets(client) == 0


async def scenario_cancel_before_publish(client: Client, nodes: Nodes) -> None:
    await nodes.add("p@unit")
    # Cancelled before it ever ran.
    never = asyncio.create_task(client.control.ping(destination=["p@unit"], timeout=LONG))
    never.cancel()
    with pytest.raises(asyncio.CancelledError):
        await never
    assert open_tickets(client) == 0
    # Cancelled inside the publish (the broker is slow to take the request).
    entered, hold = asyncio.Event(), asyncio.Event()
    transport = client.transport
    real_publish = transport.publish

    async def slow_publish(*args: Any, **kwargs: Any) -> None:
        entered.set()
        await hold.wait()
        await real_publish(*args, **kwargs)

    transport.publish = slow_publish  # type: ignore[method-assign]
    try:
        stuck = asyncio.create_task(client.control.ping(destination=["p@unit"], timeout=LONG))
        await entered.wait()
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
    finally:
        transport.publish = real_publish  # type: ignore[method-assign]
    assert open_tickets(client) == 0
    # The client is still usable.
    assert await returns_within(client.control.ping(destination=["p@unit"], timeout=LONG)) == [
        {"p@unit": {"ok": "pong"}}
    ]


# --------------------------------------------------------------------------------------------
# Memory-broker fixtures


@pytest.fixture
def broker_name() -> Iterable[str]:
    name = f"unit-control-{uuid.uuid4().hex[:8]}"
    yield name
    MemoryBroker._registry.pop(name, None)


@pytest.fixture
async def nodes(broker_name: str) -> AsyncIterator[Nodes]:
    async with running_nodes(f"memory://{broker_name}", retry=FAST_RETRY) as n:
        yield n


@pytest.fixture
async def client(broker_name: str) -> AsyncIterator[Client]:
    async with Client(f"memory://{broker_name}", retry=FAST_RETRY) as c:
        yield c


def assert_nothing_left(broker: MemoryBroker, queue: str) -> None:
    assert queue not in broker.queue_names()
    assert broker.consumer_count(queue) == 0


# --------------------------------------------------------------------------------------------
# Tests


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


async def test_1000_concurrent_calls_get_their_own_replies(client: Client, nodes: Nodes) -> None:
    await scenario_many_concurrent_calls(client, nodes)


async def test_no_timeout_needs_an_end_condition(client: Client, nodes: Nodes) -> None:
    await nodes.add("x@unit")
    replies = await returns_within(client.control.ping(destination=["x@unit"], timeout=None))
    assert replies == [{"x@unit": {"ok": "pong"}}]


async def test_a_cast_sends_no_ticket(client: Client, nodes: Nodes) -> None:
    node = await nodes.add("cast@unit")
    assert await client.control.heartbeat(destination=["cast@unit"]) is None
    await returns_within(node.wait_received(1))
    assert "ticket" not in node.received[0] and "reply_to" not in node.received[0]
    # shutdown never answers; with reply=True the call ends at its deadline with it missing.
    replies = await client.control.shutdown(destination=["cast@unit"], reply=True, timeout=0.3)
    assert replies == [] and replies is not None
    assert replies.missing == frozenset({"cast@unit"})


async def test_callback_may_be_a_coroutine(client: Client, nodes: Nodes) -> None:
    await nodes.add("cb@unit")
    seen: list[dict[str, Any]] = []

    async def callback(reply: dict[str, Any]) -> None:
        seen.append(reply)

    await client.control.broadcast(
        "ping", reply=True, destination=["cb@unit"], callback=callback, timeout=LONG
    )
    assert seen == [{"cb@unit": {"ok": "pong"}}]


async def test_string_destination_is_refused(client: Client) -> None:
    with pytest.raises(ValueError, match="list of node names"):
        await client.control.ping(destination="a@unit")


async def test_cancel_before_publish(client: Client, nodes: Nodes, broker_name: str) -> None:
    await scenario_cancel_before_publish(client, nodes)
    queue = reply_queue(client)
    await client.aclose()
    assert_nothing_left(MemoryBroker.get(broker_name), queue)


async def test_cancel_while_subscribing(broker_name: str, nodes: Nodes) -> None:
    """The first call declares the reply queue; cancelled there, the next call starts over."""
    await nodes.add("s@unit")
    broker = MemoryBroker.get(broker_name)
    async with Client(f"memory://{broker_name}") as client:
        transport = client.transport
        real_subscribe = transport._subscribe
        entered, hold = asyncio.Event(), asyncio.Event()

        async def slow_subscribe(sub: Any) -> None:
            await real_subscribe(sub)  # declared on the broker, then the caller is cancelled
            entered.set()
            await hold.wait()

        transport._subscribe = slow_subscribe  # type: ignore[method-assign]
        try:
            call = asyncio.create_task(client.control.ping(destination=["s@unit"], timeout=LONG))
            await entered.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        finally:
            transport._subscribe = real_subscribe  # type: ignore[method-assign]
        assert open_tickets(client) == 0
        assert_nothing_left(broker, reply_queue(client))
        replies = await returns_within(client.control.ping(destination=["s@unit"], timeout=LONG))
        assert replies == [{"s@unit": {"ok": "pong"}}]
        queue = reply_queue(client)
        assert broker.consumer_count(queue) == 1
    assert_nothing_left(broker, queue)


async def test_cancel_while_waiting_drops_the_late_reply(
    client: Client, nodes: Nodes, broker_name: str
) -> None:
    await scenario_cancel_while_waiting(client, nodes)
    queue = reply_queue(client)
    broker = MemoryBroker.get(broker_name)
    assert broker.consumer_count(queue) == 1  # one reply queue for all calls of a client
    await client.aclose()
    assert_nothing_left(broker, queue)


async def test_aclose_before_any_call_leaves_nothing(broker_name: str) -> None:
    broker = MemoryBroker.get(broker_name)
    before = broker.queue_names()
    async with Client(f"memory://{broker_name}"):
        pass
    assert broker.queue_names() == before


# -- broker down


async def test_stopped_broker_fails_fast_with_connect_error(broker_name: str) -> None:
    broker = MemoryBroker.get(broker_name)
    broker.stop()
    client = Client(f"memory://{broker_name}")
    try:
        with pytest.raises(ConnectError, match="stopped"):
            await returns_within(client.control.ping(timeout=LONG))
        with pytest.raises(ConnectError):
            await returns_within(client.control.inspect(timeout=LONG).stats())
        broker.start()
        async with running_nodes(f"memory://{broker_name}") as nodes:
            await nodes.add("back@unit")
            replies = await returns_within(
                client.control.ping(destination=["back@unit"], timeout=LONG)
            )
        assert replies == [{"back@unit": {"ok": "pong"}}]
    finally:
        broker.start()
        await client.aclose()


async def test_connection_dropped_in_flight_fails_at_once_and_is_not_resent(
    client: Client, nodes: Nodes, broker_name: str
) -> None:
    """A call whose connection drops while it waits raises ``ConnectionLostError`` at once.

    Replies published while the reply queue was gone are lost, so the call cannot be trusted;
    it does not wait out its deadline (its timeout here is far beyond the test's ``WITHIN``)
    and the request is never re-sent. The next call works on the restored connection.
    """
    gate = asyncio.Event()
    await nodes.add("fast@unit")
    slow = await nodes.add("gated@unit", gate=gate)
    fast_answered = asyncio.Event()
    seen: list[dict[str, Any]] = []

    def on_reply(reply: dict[str, Any]) -> None:
        seen.append(reply)
        if "fast@unit" in reply:
            fast_answered.set()

    call = asyncio.create_task(
        client.control.broadcast(
            "ping",
            reply=True,
            destination=["fast@unit", "gated@unit"],
            timeout=WITHIN * 10,
            callback=on_reply,
        )
    )
    await slow.wait_received(1)
    await fast_answered.wait()
    MemoryBroker.get(broker_name).drop_connections()
    with pytest.raises(ConnectionLostError, match="not re-sent"):
        await returns_within(call)
    assert seen == [{"fast@unit": {"ok": "pong"}}]
    gate.set()
    # The next call works on the restored connection; the gated node got the request once.
    again = await returns_within(
        client.control.ping(destination=["fast@unit", "gated@unit"], timeout=LONG)
    )
    assert len(again) == 2 and again.complete
    assert len(slow.received) == 2  # the failed call's request and this one: nothing re-sent


async def test_broker_stopped_during_a_call_raises(
    client: Client, nodes: Nodes, broker_name: str
) -> None:
    """The broker goes away mid-call: the call raises ``ConnectionLostError`` without waiting
    for the broker (or its own deadline) to come back."""
    broker = MemoryBroker.get(broker_name)
    gate = asyncio.Event()
    slow = await nodes.add("gated@unit", gate=gate)
    call = asyncio.create_task(client.control.ping(destination=["gated@unit"], timeout=WITHIN * 10))
    await slow.wait_received(1)
    broker.stop()
    try:
        with pytest.raises(ConnectionLostError):
            await returns_within(call)
    finally:
        broker.start()
    # Once the broker is back, the next call works.
    gate.set()
    async with asyncio.timeout(WITHIN):
        while True:
            with contextlib.suppress(ConnectionLostError):
                replies = await client.control.ping(destination=["gated@unit"], timeout=1.0)
                if replies:
                    break
    assert replies[-1] == {"gated@unit": {"ok": "pong"}}


async def test_publish_timeout_is_a_connection_error(client: Client, nodes: Nodes) -> None:
    """A publish the broker never takes ends at the connect timeout as ConnectionLostError.

    The reply timeout does not bound sending (issue 19): here it is far longer, and the error
    names the connect timeout that did.
    """
    await nodes.add("t@unit")
    await client.control.ping(destination=["t@unit"], timeout=LONG)  # reply queue exists
    transport = client.transport
    real_publish = transport.publish
    never = asyncio.Event()

    async def stuck_publish(*args: Any, **kwargs: Any) -> None:
        await never.wait()

    transport.publish = stuck_publish  # type: ignore[method-assign]
    transport.connect_timeout = 0.2
    try:
        with pytest.raises(ConnectionLostError, match=r"could not send 'ping'.* within 0\.2s"):
            await returns_within(client.control.ping(destination=["t@unit"], timeout=LONG * 10))
    finally:
        transport.publish = real_publish  # type: ignore[method-assign]
    assert open_tickets(client) == 0


async def test_against_aiocelerymon_nodes(broker_name: str) -> None:
    """The client with :class:`aiocelerymon.control.node.Node` responders (when it exists)."""
    from aiocelerymon.control import node as node_module

    url = f"memory://{broker_name}"
    node_names = ["node-a@unit", "node-b@unit"]
    async with (
        Client(url) as node_client,
        Client(url) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        for name in node_names:
            node = node_module.Node(node_client, name, unique_check_timeout=None)
            node.register("echo", lambda **kwargs: {"echo": kwargs})
            await stack.enter_async_context(node)
        flat = await returns_within(
            client.control.inspect(expected=node_names, timeout=LONG).ping()
        )
        assert flat == {name: {"ok": "pong"} for name in node_names}

        async def call(i: int) -> Any:
            node = node_names[i % 2]
            inspect = client.control.inspect(destination=[node], timeout=LONG)
            return node, i, await inspect.call("echo", token=i)

        for node, i, reply in await returns_within(asyncio.gather(*(call(i) for i in range(500)))):
            assert reply == {node: {"echo": {"token": i}}}
        errors = await returns_within(
            client.control.broadcast("nosuch", reply=True, expected=node_names, timeout=LONG)
        )
        assert errors is not None
        assert errors.errors == dict.fromkeys(node_names, "KeyError('nosuch')")


async def test_reply_timeout_starts_once_the_request_is_sent(client: Client, nodes: Nodes) -> None:
    """Sending slower than the reply timeout (a slow link, a busy client) is not an outage.

    Issue 19: the send was under the reply deadline, and such a call raised "could not send
    ... broker unreachable" from a broker that was answering.
    """
    await nodes.add("s@unit")
    transport = client.transport
    real_publish = transport.publish

    async def slow_publish(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.3)
        await real_publish(*args, **kwargs)

    transport.publish = slow_publish  # type: ignore[method-assign]
    try:
        got = await returns_within(client.control.ping(destination=["s@unit"], timeout=0.2))
    finally:
        transport.publish = real_publish  # type: ignore[method-assign]
    assert got == [{"s@unit": {"ok": "pong"}}] and got.complete and not got.missing


async def test_a_known_node_that_does_not_answer_is_missing(client: Client, nodes: Nodes) -> None:
    """Nodes this client heard from lately are missing from a broadcast they did not answer."""
    gate = asyncio.Event()
    gate.set()
    await nodes.add("k1@unit")
    await nodes.add("k2@unit", gate=gate)
    first = await returns_within(client.control.ping(expected=["k1@unit", "k2@unit"], timeout=LONG))
    assert first.complete and client.mailbox.known_nodes() >= {"k1@unit", "k2@unit"}
    gate.clear()  # k2 goes quiet
    second = await client.control.ping(timeout=0.3)
    assert [list(r) for r in second] == [["k1@unit"]]
    assert second.missing == frozenset({"k2@unit"}) and not second.complete
    flat = await client.control.inspect(timeout=0.3, pattern="k2*").ping()
    assert not flat and flat == None  # noqa: E711 - what Celery's callers compare
    assert flat.missing == frozenset({"k2@unit"})
    # Addressed by name, the quiet node is not asked and so not missing; the pattern excludes.
    assert (await client.control.ping(destination=["k1@unit"], timeout=LONG)).complete
    gate.set()


def test_no_replies_is_falsy_and_equal_to_none_but_keeps_missing() -> None:
    nobody = NoReplies()
    nobody.missing, nobody.complete = frozenset({"w@h"}), False
    assert not nobody and nobody == None  # noqa: E711
    assert (nobody != None) is False  # noqa: E711 - dict's own __ne__ would say True
    assert nobody == {} and (nobody or {"x": 1}) == {"x": 1}
    assert nobody.missing == frozenset({"w@h"}) and "w@h" in repr(nobody)
    assert dict(nobody) == {} and nobody.errors == {}
