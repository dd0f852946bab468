"""Celery event messages: one JSON object per event, or a ``task.multi`` list of them.

Field order on the wire: hostname, utcoffset, pid, clock, fields..., timestamp, type
(celery/events/event.py). Events are transient and carry header ``hostname``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from aiocelerymon.exceptions import DecodeError
from aiocelerymon.wire import codec
from aiocelerymon.wire.entities import Message
from aiocelerymon.wire.names import TRANSIENT

__all__ = ["decode_events", "event", "event_message", "utcoffset"]


def utcoffset() -> int:
    """Hours *west* of UTC, as Celery <= 5.6 sends it (integer floor division)."""
    offset = time.altzone if time.daylight and time.localtime().tm_isdst > 0 else time.timezone
    return offset // 3600


def event(
    type_: str,
    *,
    hostname: str,
    clock: int | None,
    timestamp: float | None = None,
    pid: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build an event dict in Celery's field order."""
    ev: dict[str, Any] = {
        "hostname": hostname,
        "utcoffset": utcoffset(),
        "pid": os.getpid() if pid is None else pid,
        "clock": clock,
    }
    ev.update(fields)
    ev["timestamp"] = time.time() if timestamp is None else timestamp
    ev["type"] = type_
    return ev


def event_message(events: dict[str, Any] | Sequence[dict[str, Any]], hostname: str) -> Message:
    """One event, or a list for a ``task.multi`` batch, as a transient message."""
    body = events if isinstance(events, dict) else list(events)
    data, content_type, content_encoding = codec.encode(body)
    return Message(data, content_type, content_encoding, {"hostname": hostname}, TRANSIENT)


def decode_events(payload: Any) -> list[dict[str, Any]]:
    """A decoded event body as a list of event dicts (``task.multi`` bodies are lists).

    Raises:
        DecodeError: the body is neither an object nor a list of objects.
    """
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list) and all(isinstance(e, dict) for e in payload):
        return payload
    raise DecodeError(f"event body must be an object or a list of objects, not {payload!r:.80}")
