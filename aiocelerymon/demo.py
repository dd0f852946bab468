"""The main job on the embedded in-memory broker: no broker, no Celery worker needed.

Two simulated nodes join the pidbox and emit worker and task events, exactly as Celery workers
put them on the wire. The demo then pings them the way ``celery inspect ping`` does, finishing as
soon as both answered instead of waiting out the timeout, and dumps their events.
Run: ``python -m aiocelerymon.demo`` (the operator demo with a live monitor comes later).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiocelerymon.exceptions import ProtocolError
from aiocelerymon.transports import Transport, create_transport
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.event import decode_events, event, event_message
from aiocelerymon.wire.pidbox import (
    ReplyTo,
    destination_matches,
    reply_message,
    request_body,
    request_message,
)

NODES = ("demo1@localhost", "demo2@localhost")


async def simulated_node(
    transport: Transport, nodename: str, ready: asyncio.Event, tasks: int
) -> None:
    """Answer ``ping`` on the pidbox and emit worker-online plus a task.multi batch."""
    clock = LamportClock()
    events = names.event_exchange()
    async with transport.subscribe(names.node_binding(nodename)) as requests:
        ready.set()
        online = event("worker-online", hostname=nodename, clock=clock.forward(), freq=2.0)
        await transport.publish(event_message(online, nodename), events, "worker.online")
        batch: list[dict[str, Any]] = []
        for _ in range(tasks):
            task_id = str(uuid.uuid4())
            fields: dict[str, Any] = {"uuid": task_id}
            batch.append(
                event(
                    "task-received",
                    hostname=nodename,
                    clock=clock.forward(),
                    name="proj.add",
                    args="(2, 2)",
                    kwargs="{}",
                    **fields,
                )
            )
            ok = random.random() > 0.3
            batch.append(
                event(
                    "task-succeeded",
                    hostname=nodename,
                    clock=clock.forward(),
                    result="4",
                    runtime=random.uniform(0.001, 0.2),
                    **fields,
                )
                if ok
                else event(
                    "task-failed",
                    hostname=nodename,
                    clock=clock.forward(),
                    exception="ZeroDivisionError('division by zero')",
                    **fields,
                )
            )
        await transport.publish(event_message(batch, nodename), events, names.TASK_MULTI)
        async for delivery in requests:
            try:
                body = codec.decode(delivery.body, delivery.content_type, delivery.content_encoding)
            except ProtocolError:
                continue
            clock.adjust(int(delivery.headers.get("clock") or 0))
            if not destination_matches(nodename, body) or body.get("method") != "ping":
                continue
            reply_to = body.get("reply_to")
            if reply_to:
                await transport.publish(
                    reply_message(
                        nodename, {"ok": "pong"}, ticket=body.get("ticket"), clock=clock.forward()
                    ),
                    names.reply_exchange(),
                    reply_to["routing_key"],
                )


async def ping(transport: Transport, timeout: float, expected: int) -> list[dict[str, Any]]:
    """``inspect ping`` with a total deadline that ends early when every node answered."""
    oid, ticket = str(uuid.uuid4()), str(uuid.uuid4())
    replies: list[dict[str, Any]] = []
    async with transport.subscribe(names.reply_binding(oid)) as sub:
        reply_to = ReplyTo(exchange=names.reply_exchange().name, routing_key=oid)
        body = request_body("ping", ticket=ticket, reply_to=reply_to)
        await transport.publish(
            request_message(body, clock=1, timeout=timeout), names.pidbox_exchange()
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for delivery in sub:
                    if delivery.headers.get("ticket") != ticket:
                        continue
                    replies.append(
                        codec.decode(
                            delivery.body, delivery.content_type, delivery.content_encoding
                        )
                    )
                    if len(replies) == expected:
                        break
    return replies


async def main(tasks: int, timeout: float) -> int:
    """Run the demo; returns the process exit code."""
    async with create_transport("memory://demo") as transport:
        monitor = await transport.subscribe(names.event_binding("demo-monitor")).start()
        ready = [asyncio.Event() for _ in NODES]
        nodes = [
            asyncio.create_task(simulated_node(transport, n, r, tasks))
            for n, r in zip(NODES, ready, strict=True)
        ]
        await asyncio.gather(*(r.wait() for r in ready))
        started = time.perf_counter()
        replies = await ping(transport, timeout, expected=len(NODES))
        elapsed = time.perf_counter() - started
        for reply in replies:
            for node, value in reply.items():
                print(f"->  {node}: OK\n        {value['ok']}")
        print(
            f"\n{len(replies)} nodes online. (answered in {elapsed * 1000:.1f} ms; "
            f"Celery waits out its {timeout:g} s timeout)\n"
        )
        print("-> evdump: starting capture...")
        expected_events = len(NODES) * (1 + 2 * tasks)
        seen = 0
        async with asyncio.timeout(timeout):
            while seen < expected_events:
                delivery = await monitor.receive()
                body = codec.decode(delivery.body, delivery.content_type, delivery.content_encoding)
                for ev in decode_events(body):
                    seen += 1
                    kind = ev["type"].replace("-", " ")
                    extra = f" {ev['uuid']}" if "uuid" in ev else ""
                    stamp = datetime.fromtimestamp(ev["timestamp"], UTC)
                    print(f"{ev['hostname']} [{stamp}] {kind}{extra}")
        for task in nodes:
            task.cancel()
        await asyncio.gather(*nodes, return_exceptions=True)
        await monitor.aclose()
    return 0 if len(replies) == len(NODES) else 69


def run() -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(prog="python -m aiocelerymon.demo", description=__doc__)
    parser.add_argument("--tasks", type=int, default=3, help="tasks per simulated node")
    parser.add_argument("-t", "--timeout", type=float, default=1.0)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.tasks, args.timeout)))


if __name__ == "__main__":
    run()
