"""The transport contract on the in-memory broker, plus its AMQP-like refusals."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from aiocelerymon.exceptions import BrokerRefusedError, ConnectError, ResourceLockedError
from aiocelerymon.transports import Binding, Exchange, ExchangeKind, Message, TransportBase
from aiocelerymon.transports.memory import MemoryBroker, MemoryTransport
from tests.support.contract import MakeTransport, TransportContract, connected, receive


@pytest.fixture
def broker_name() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def make_transport(broker_name: str) -> AsyncIterator[MakeTransport]:
    async with connected(lambda **o: MemoryTransport(f"memory://{broker_name}", **o)) as make:
        yield make


class TestMemoryContract(TransportContract):
    async def force_disconnect(self, transport: TransportBase) -> None:
        assert isinstance(transport, MemoryTransport)
        transport.broker.drop_connections()


async def test_exchange_redeclare_with_other_flags_is_refused(make_transport: MakeTransport):
    t = await make_transport()
    await t.publish(Message(b"1"), Exchange("celeryev", ExchangeKind.TOPIC, durable=True), "x")
    with pytest.raises(BrokerRefusedError, match="inequivalent"):
        await t.publish(Message(b"1"), Exchange("celeryev", ExchangeKind.TOPIC), "x")


async def test_exclusive_queue_is_locked_to_its_connection(make_transport: MakeTransport):
    t1, t2 = await make_transport(), await make_transport()
    b = Binding(Exchange("ex", ExchangeKind.DIRECT), "k", queue="q", exclusive=True)
    async with t1.subscribe(b):
        with pytest.raises(ResourceLockedError):
            async with t2.subscribe(b):
                pass


async def test_durable_named_queue_keeps_messages_between_consumers(
    make_transport: MakeTransport, broker_name: str
):
    # What a pipeline needs to restart without losing events (named, durable, not exclusive).
    t = await make_transport()
    ex = Exchange("celeryev", ExchangeKind.TOPIC, durable=True)
    b = Binding(ex, "#", queue="pipeline", exclusive=False, durable=True, auto_delete=False)
    async with t.subscribe(b):
        pass
    await t.publish(Message(b"kept"), ex, "task.multi")
    assert MemoryBroker.get(broker_name).message_count("pipeline") == 1
    async with t.subscribe(b) as sub:
        assert (await receive(sub)).body == b"kept"


async def test_message_ttl_drops_stale_backlog(make_transport: MakeTransport, broker_name: str):
    t = await make_transport()
    ex = Exchange("ttl", ExchangeKind.DIRECT)
    b = Binding(ex, "k", queue="q", exclusive=False, auto_delete=False, message_ttl=0.001)
    async with t.subscribe(b):
        pass
    await t.publish(Message(b"stale"), ex, "k")
    broker = MemoryBroker.get(broker_name)
    q = broker._queues["q"]
    stamp, delivery = q.backlog[0]
    q.backlog[0] = (stamp - 1.0, delivery)  # age it deterministically instead of sleeping
    async with t.subscribe(b) as sub:
        await t.publish(Message(b"fresh"), ex, "k")
        assert (await receive(sub)).body == b"fresh"


async def test_stopped_broker_refuses_connections(broker_name: str):
    broker = MemoryBroker.get(broker_name)
    broker.stop()
    t = MemoryTransport(f"memory://{broker_name}")
    with pytest.raises(ConnectError):
        await t.connect()
    broker.start()
    await t.connect()
    await t.aclose()


async def test_auto_delete_queue_goes_with_last_consumer(
    make_transport: MakeTransport, broker_name: str
):
    t = await make_transport()
    b = Binding(Exchange("ad", ExchangeKind.FANOUT), queue="adq", exclusive=False)
    async with t.subscribe(b):
        assert "adq" in MemoryBroker.get(broker_name).queue_names()
    assert "adq" not in MemoryBroker.get(broker_name).queue_names()
