"""After 10,000 inspect calls Redis holds no reply list and no binding member of ours.

Flower users have found gigabytes of ``<oid>.reply.celery.pidbox`` lists and binding members
left by clients that created a reply queue per call and never removed it. Here one client makes
10,000 calls (answered by our own Node, so each finishes early), and 100 short-lived clients
each make a call, half of them cancelled mid-call, then close.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis

from aiocelerymon import Client, Node
from tests.integration.reliability.servers import restartable_redis

pytestmark = [pytest.mark.integration, pytest.mark.redis]

CALLS = 10_000
IN_FLIGHT = 200
NODE = "hygiene@node"
TABLE = "_kombu.binding.reply.celery.pidbox"
DEADLINE = 120.0


async def leftovers(raw: aioredis.Redis) -> tuple[list[bytes], set[bytes]]:
    """Reply lists (``<oid>.reply.celery.pidbox`` and priority steps) and binding members."""
    keys = [k async for k in raw.scan_iter(match="*.reply.*pidbox*", count=1000)]
    lists = sorted(k for k in keys if not k.startswith(b"_kombu."))
    return lists, await raw.smembers(TABLE)  # type: ignore[misc]


async def test_ten_thousand_inspect_calls_leave_nothing_behind() -> None:
    with restartable_redis() as server:
        raw = aioredis.Redis.from_url(server.url)
        node_client = Client(server.url)
        node = Node(node_client, NODE, unique_check_timeout=None)
        await node.start()
        try:
            async with Client(server.url) as client:
                inspect = client.control.inspect(destination=[NODE], timeout=30.0)
                slots = asyncio.Semaphore(IN_FLIGHT)
                answered = 0

                async def one() -> None:
                    nonlocal answered
                    async with slots:
                        replies = await inspect.ping()
                    assert replies == {NODE: {"ok": "pong"}}
                    answered += 1

                async with asyncio.timeout(DEADLINE):
                    await asyncio.gather(*(one() for _ in range(CALLS)))
                assert answered == CALLS
                # One reply queue for all of them, while the client lives.
                keys, members = await leftovers(raw)
                assert len(members) == 1 and keys == []  # replies were all consumed

                async def short_lived(cancel: bool) -> None:
                    async with Client(server.url) as other:
                        call = asyncio.ensure_future(
                            other.control.inspect(destination=[NODE], timeout=5.0).stats()
                        )
                        if cancel:
                            await asyncio.sleep(0)  # somewhere between subscribe and reply
                            call.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await call
                        else:
                            assert NODE in (await call or {})

                async with asyncio.timeout(DEADLINE):
                    await asyncio.gather(*(short_lived(i % 2 == 0) for i in range(100)))
            # Replies to the cancelled calls may still arrive after their client is gone.
            await node.aclose()
            await node_client.aclose()
            keys, members = await leftovers(raw)
            assert (keys, members) == ([], set())
            assert await raw.exists(TABLE) == 0
        finally:
            await node.aclose()
            await node_client.aclose()
            await raw.aclose()
