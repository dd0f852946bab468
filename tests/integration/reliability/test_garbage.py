"""Raw garbage on a real broker's event exchange: counted, logged, skipped; the stream goes on."""

from __future__ import annotations

import asyncio
import logging
import pickle
from typing import Any

import pytest
import redis.asyncio as aioredis

from aiocelerymon import create_transport
from aiocelerymon.events import EventReceiver
from aiocelerymon.transports import Message
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.event import event, event_message
from tests.integration.reliability.servers import restartable_redis

pytestmark = [pytest.mark.integration]

CELERYEV = names.event_exchange()
DEADLINE = 30.0
#: (body, content type, content encoding): each one is skipped by the receiver.
BAD_MESSAGES = [
    (b"{not json", "application/json", "utf-8"),
    (b'"a string, not an event"', "application/json", "utf-8"),
    (pickle.dumps({"type": "worker-online"}), "application/x-python-serialize", "binary"),
    (b'{"type": "worker-online"}', "application/x-yaml", "utf-8"),
    (b'{"type": "worker-online"}', None, None),
    (b'{"type": "worker-online"}', "application/json", "no-such-codec"),
    (b'{"hostname": "no type"}', "application/json", "utf-8"),
    (b"\xff" * 100_000, "application/json", "utf-8"),
]
#: Payloads only Redis can carry: not a kombu envelope at all, or a broken one.
BAD_ENVELOPES = [
    b"\x00\x01 binary",
    b'["an", "array"]',
    b'{"body": "!!!not base64", "properties": {"body_encoding": "base64"}}',
    codec.dumps({"body": "eyJ0eXBlIjo", "properties": {"body_encoding": "base64"}}),  # cut
    b'{"properties": "wrong type", "body": ""}',
]


@pytest.mark.parametrize("broker", [pytest.param("redis", marks=pytest.mark.redis),
                                    pytest.param("amqp", marks=pytest.mark.amqp)])  # fmt: skip
async def test_garbage_is_counted_and_the_stream_goes_on(
    broker: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    with restartable_redis() as redis_server:
        url = redis_server.url if broker == "redis" else request.getfixturevalue("own_rabbit").url
        transport = create_transport(url)
        await transport.connect()
        try:
            receiver = EventReceiver(transport)
            good: list[dict[str, Any]] = []

            async def consume() -> None:
                async for ev in receiver.itercapture(wakeup=False):
                    good.append(ev)  # type: ignore[arg-type]
                    if ev["hostname"] == "celery@last":
                        return

            caplog.set_level(logging.WARNING)
            task = asyncio.create_task(consume())
            async with asyncio.timeout(DEADLINE):
                await receiver.ready.wait()
            for body, ctype, enc in BAD_MESSAGES:
                await transport.publish(Message(body, ctype, enc), CELERYEV, "worker.online")
            expected = len(BAD_MESSAGES)
            if broker == "redis":
                raw = aioredis.Redis.from_url(url)
                try:
                    for payload in BAD_ENVELOPES:
                        assert await raw.publish("/0.celeryev/worker.online", payload) == 1
                finally:
                    await raw.aclose()
            last = event("worker-heartbeat", hostname="celery@last", clock=1)
            await transport.publish(event_message(last, "x"), CELERYEV, "worker.heartbeat")
            async with asyncio.timeout(DEADLINE):
                await task
            assert [ev["hostname"] for ev in good] == ["celery@last"]
            assert receiver.malformed == expected
            # Envelopes that are not kombu's are the transport's to count (one WARNING each).
            transport_malformed = getattr(transport, "malformed", 0)
            assert transport_malformed == (len(BAD_ENVELOPES) if broker == "redis" else 0)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == expected + transport_malformed
            assert all(len(r.getMessage()) < 1000 for r in warnings)  # no 100 kB log lines
        finally:
            await transport.aclose()
