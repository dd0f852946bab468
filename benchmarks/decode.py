"""Decoding a Redis ``task.multi`` envelope into event dicts: ours vs kombu's per-message path."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiocelerymon.wire import codec
from aiocelerymon.wire.entities import Message
from aiocelerymon.wire.event import event, event_message
from aiocelerymon.wire.kombu_redis import decode_envelope, encode_envelope

BATCH = 24


def _payload() -> bytes:
    events = [
        event(
            "task-succeeded",
            hostname="celery@bench",
            clock=i,
            uuid=str(uuid.uuid4()),
            result="4",
            runtime=0.0012,
        )
        for i in range(BATCH)
    ]
    message: Message = event_message(events, "celery@bench")
    return encode_envelope(message, exchange="celeryev", routing_key="task.multi")


def _ours(raw: bytes) -> list[dict[str, Any]]:
    d = decode_envelope(raw)
    result: list[dict[str, Any]] = codec.decode(d.body, d.content_type, d.content_encoding)
    return result


def _kombus() -> Callable[[bytes], Any]:
    from kombu.serialization import loads

    def decode(raw: bytes) -> Any:
        env = json.loads(raw)
        body = base64.b64decode(env["body"])
        return loads(
            body, env["content-type"], env["content-encoding"], accept={"application/json"}
        )

    return decode


def _rate(fn: Callable[[bytes], Any], raw: bytes, rounds: int, n: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn(raw)
        best = min(best, time.perf_counter() - start)
    return n * BATCH / best


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    raw = _payload()
    theirs = _kombus()
    assert _ours(raw) == theirs(raw), "both sides must decode the same events"
    n = 200 if quick else 5000
    return [
        {
            "name": "decode task.multi envelope (Redis)",
            "unit": "events/s",
            "ours": _rate(_ours, raw, 5, n),
            "theirs": _rate(theirs, raw, 5, n),
        }
    ]
