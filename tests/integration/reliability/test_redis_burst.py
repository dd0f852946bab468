"""A burst of 80,000 single task events on Redis pub/sub, against the default output-buffer limit.

Redis disconnects a pub/sub client whose unsent output passes ``client-output-buffer-limit
pubsub 32mb 8mb 60`` (the default, set explicitly here). The publisher runs in its own process
and pipelines every PUBLISH, so Redis emits the ~45 MB within a fraction of a second: only a
reader that drains the socket faster than it processes stays connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time

import pytest

from aiocelerymon.events import EventReceiver, StreamGap
from aiocelerymon.transports import RetryPolicy, TransportState
from aiocelerymon.transports import redis as redis_adapter
from aiocelerymon.transports.redis import RedisTransport
from aiocelerymon.wire import names
from aiocelerymon.wire.event import event, event_message
from tests.integration.reliability.servers import restartable_redis

pytestmark = [pytest.mark.integration, pytest.mark.redis]

BURST = 80_000
DEADLINE = 60.0
CELERYEV = names.event_exchange()


async def publish_burst(port: int, count: int) -> dict[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.reliability._burst_publisher",
        "127.0.0.1", str(port), "/0.celeryev/task.succeeded", str(count),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(DEADLINE):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    return dict(field.split("=") for field in out.decode().split())


async def test_burst_within_the_default_pubsub_limit_arrives_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with restartable_redis("--client-output-buffer-limit", "pubsub 32mb 8mb 60") as server:
        t = RedisTransport(server.url)
        await t.connect()
        try:
            receiver = EventReceiver(t)
            seen = 0

            async def consume() -> None:
                nonlocal seen
                async for item in receiver.itercapture(limit=BURST, wakeup=False, gaps=True):
                    assert not isinstance(item, StreamGap)
                    seen += 1

            with caplog.at_level(logging.WARNING, logger="aiocelerymon"):
                task = asyncio.create_task(consume())
                async with asyncio.timeout(DEADLINE):
                    await receiver.ready.wait()
                stats = await publish_burst(server.port, BURST)
                # Every PUBLISH reached our subscriber: Redis never dropped it mid-burst.
                assert stats["last_receivers"] == "1", "Redis cut our receiver off"
                async with asyncio.timeout(DEADLINE):
                    await task
            assert int(stats["bytes"]) > 40_000_000
            assert (seen, receiver.event_count, receiver.gaps, receiver.malformed) == (
                BURST, BURST, 0, 0,
            )  # fmt: skip
            assert t.state is TransportState.CONNECTED
            assert not [r for r in caplog.records if "lost" in r.getMessage()]
        finally:
            await t.aclose()


async def test_a_consumer_cut_off_by_the_limit_reports_a_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A limit far below what the kernel buffers, and a consumer that stalls: cut off.
    with restartable_redis("--client-output-buffer-limit", "pubsub 64kb 32kb 1") as server:
        t = RedisTransport(server.url, retry=RetryPolicy(initial=0.05, maximum=0.2))
        await t.connect()
        try:
            stalled: list[bool] = []

            def stall_once(event: dict[str, object]) -> None:
                # A handler that blocks the event loop (a slow consumer): nothing is read
                # meanwhile, so Redis's buffer for us overflows the (tiny) limit.
                if not stalled:
                    stalled.append(True)
                    time.sleep(1.0)

            receiver = EventReceiver(t, handlers={"*": stall_once})
            items: list[object] = []
            got_gap = asyncio.Event()

            async def consume() -> None:
                async for item in receiver.itercapture(wakeup=False, gaps=True):
                    items.append(item)
                    if isinstance(item, StreamGap):
                        got_gap.set()

            with caplog.at_level(logging.WARNING, logger="aiocelerymon"):
                task = asyncio.create_task(consume())
                async with asyncio.timeout(DEADLINE):
                    await receiver.ready.wait()
                # Redis drops us mid-burst; we may be back before it ends (fast retry policy).
                await publish_burst(server.port, BURST)
                # Events keep being published after the cut (a live cluster); once we are back,
                # the first of them carries the new generation and the gap shows up.
                async with asyncio.timeout(DEADLINE):
                    while not got_gap.is_set():
                        if t.state is TransportState.CONNECTED:
                            ev = event("worker-heartbeat", hostname="celery@after", clock=1)
                            message = event_message(ev, "celery@after")
                            await t.publish(message, CELERYEV, "worker.heartbeat")
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(got_gap.wait(), 0.1)
                task.cancel()
            assert receiver.gaps == 1
            burst_seen = [i for i in items if not isinstance(i, StreamGap)]
            assert 0 < len(burst_seen) < BURST  # some arrived, the rest were lost: a gap
            # One line for the outage (transport), one for the gap (receiver); both WARNING.
            lines = [(r.name, r.levelno) for r in caplog.records]
            assert lines == [
                ("aiocelerymon.transport", logging.WARNING),
                ("aiocelerymon.events", logging.WARNING),
            ]
        finally:
            await t.aclose()


async def test_backlog_bound_pauses_reading_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A 256 KiB bound instead of 256 MiB, and a consumer that stalls: reading pauses, Redis
    # holds the rest (well under its limit here), and everything arrives once we resume.
    monkeypatch.setattr(redis_adapter, "PUBSUB_MAX_BACKLOG", 256 * 1024)
    count = 20_000
    with restartable_redis("--client-output-buffer-limit", "pubsub 32mb 8mb 60") as server:
        t = RedisTransport(server.url)
        await t.connect()
        try:
            stalled: list[bool] = []

            def stall_once(event: dict[str, object]) -> None:
                if not stalled:
                    stalled.append(True)
                    time.sleep(0.5)

            receiver = EventReceiver(t, handlers={"*": stall_once})
            with caplog.at_level(logging.WARNING, logger="aiocelerymon"):
                task = asyncio.create_task(receiver.capture(limit=count, wakeup=False))
                async with asyncio.timeout(DEADLINE):
                    await receiver.ready.wait()
                await publish_burst(server.port, count)
                async with asyncio.timeout(DEADLINE):
                    await task
            assert (receiver.event_count, receiver.gaps) == (count, 0)
            paused = [r for r in caplog.records if "reading paused" in r.getMessage()]
            assert len(paused) == 1, "the bound was reached (else this proves nothing), once"
            assert t.state is TransportState.CONNECTED
        finally:
            await t.aclose()
