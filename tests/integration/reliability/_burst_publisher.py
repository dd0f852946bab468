"""Publish a burst of single task events to Redis as fast as the server takes them.

Run as ``python -m tests.integration.reliability._burst_publisher HOST PORT CHANNEL COUNT``.
It is a separate process, as a worker would be, so our receiver competes for nothing but
Redis. The commands are pre-encoded RESP written in one stream (pipelined, no waiting for
replies), which is faster than any Celery worker emits events; it prints how many subscribers
the last PUBLISH reached, so a receiver cut off mid-burst shows as 0.
"""

from __future__ import annotations

import socket
import sys
import time
import uuid

from aiocelerymon.wire.event import event, event_message
from aiocelerymon.wire.kombu_redis import encode_envelope


def envelope(i: int) -> bytes:
    # The size of a real task-succeeded event (about 500 bytes as a kombu envelope).
    ev = event(
        "task-succeeded",
        hostname="celery@burst",
        clock=i + 1,
        uuid=str(uuid.uuid4()),
        result="None",
        runtime=0.001,
    )
    return encode_envelope(
        event_message(ev, "celery@burst"), exchange="celeryev", routing_key="task.succeeded"
    )


def resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def main() -> None:
    host, port, channel, count = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3].encode(),
        int(sys.argv[4]),
    )
    payloads = [resp(b"PUBLISH", channel, envelope(i)) for i in range(count)]
    total = sum(len(p) for p in payloads)
    with socket.create_connection((host, port)) as sock:
        started = time.monotonic()
        sock.sendall(b"".join(payloads))
        replies = b""
        while replies.count(b"\r\n") < count:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("redis closed the publisher connection")
            replies += chunk
        elapsed = time.monotonic() - started
    last = replies.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
    print(
        f"published={count} bytes={total} seconds={elapsed:.3f} last_receivers={last[1:].decode()}"
    )


if __name__ == "__main__":
    main()
