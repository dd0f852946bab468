"""The transport contract on a real Redis server: db 0 plain, and db 5 with a global key prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from aiocelerymon.transports import TransportBase
from aiocelerymon.transports.redis import RedisTransport
from tests.support.brokers import RedisServer
from tests.support.contract import MakeTransport, TransportContract, connected

pytestmark = [pytest.mark.integration, pytest.mark.redis]


async def kill_clients(url: str) -> None:
    """Sever every pub/sub and normal client connection but this one (a broker-side cut)."""
    raw = aioredis.Redis.from_url(url)
    try:
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await raw.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    finally:
        await raw.aclose()


class TestRedisContract(TransportContract):
    db = 0
    transport_options: dict[str, Any] | None = None

    @pytest.fixture
    async def make_transport(self, redis_server: RedisServer) -> AsyncIterator[MakeTransport]:
        url, opts = redis_server.url_for(self.db), self.transport_options
        async with connected(lambda **o: RedisTransport(url, transport_options=opts, **o)) as make:
            yield make

    async def force_disconnect(self, transport: TransportBase) -> None:
        assert isinstance(transport, RedisTransport)
        await kill_clients(transport.url.unredacted())


class TestRedisContractPrefixedDb5(TestRedisContract):
    """Same contract where every key and channel is ``pfx:``-prefixed and db-5-qualified."""

    db = 5
    transport_options = {"global_keyprefix": "pfx:"}  # noqa: RUF012 - read-only test data
