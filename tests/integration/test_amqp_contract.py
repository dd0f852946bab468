"""The shared transport contract on a real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from aiocelerymon.transports import TransportBase, TransportState
from aiocelerymon.transports.amqp import AmqpTransport
from tests.support.brokers import RabbitServer
from tests.support.contract import MakeTransport, TransportContract, connected

pytestmark = [pytest.mark.integration, pytest.mark.amqp]

RECOVERY_DEADLINE = 20.0


def connection_pids(server: RabbitServer, transport: AmqpTransport) -> set[str]:
    """Broker-side ids of ``transport``'s connections, found by its ``connection_name``."""
    listing = server.rabbitmqctl(
        "list_connections", "--quiet", "--no-table-headers", "pid", "client_properties"
    )
    return {
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'"{transport.connection_name}"' in line
    }


def close_and_await_new_connection(server: RabbitServer, transport: AmqpTransport) -> None:
    """Close the transport's connection from the broker side, then wait for its replacement.

    Other transports on the same broker are left alone. Polls the broker (there is no event
    for "a client reconnected") until a connection with a new id carries the transport's name.
    """
    old = connection_pids(server, transport)
    assert old, f"no connection named {transport.connection_name!r}"
    for pid in old:
        server.rabbitmqctl("close_connection", pid, "aiocelerymon test: forced disconnect")
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while not connection_pids(server, transport) - old:
        assert time.monotonic() < deadline, "the transport did not reconnect"
        time.sleep(0.1)


@pytest.fixture
async def make_transport(rabbit_server: RabbitServer) -> AsyncIterator[MakeTransport]:
    async with connected(lambda **o: AmqpTransport(rabbit_server.url, **o)) as make:
        yield make


class TestAmqpContract(TransportContract):
    @pytest.fixture(autouse=True)
    def _server(self, rabbit_server: RabbitServer) -> None:
        self.server = rabbit_server

    async def force_disconnect(self, transport: TransportBase) -> None:
        assert isinstance(transport, AmqpTransport)
        # Off the loop: rabbitmqctl takes about a second and the client must keep running
        # (to notice the close and reconnect) meanwhile.
        await asyncio.to_thread(close_and_await_new_connection, self.server, transport)
        # The new connection exists; wait until its subscriptions are replayed too. RabbitMQ
        # may deliver on a restored consumer before the reconnect loop marks the transport
        # CONNECTED, and the contract checks the state right after such a delivery.
        deadline = time.monotonic() + RECOVERY_DEADLINE
        while transport.state is not TransportState.CONNECTED:
            assert time.monotonic() < deadline, f"{transport!r} did not finish reconnecting"
            await asyncio.sleep(0.01)
