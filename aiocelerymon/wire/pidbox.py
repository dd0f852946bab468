"""Pidbox request and reply messages, shaped exactly as kombu's ``Mailbox`` shapes them.

Request body keys and order: method, arguments, destination, pattern, matcher, then ticket and
reply_to only when a reply is wanted (kombu ``Mailbox._broadcast``). Requests are persistent
(delivery_mode 2), replies transient (1), as kombu sends them (wire reference §2.2, §2.4).
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from aiocelerymon.wire import codec
from aiocelerymon.wire.entities import Message
from aiocelerymon.wire.names import PERSISTENT, TRANSIENT

__all__ = [
    "ReplyTo",
    "destination_matches",
    "reply_message",
    "request_body",
    "request_message",
]


class ReplyTo(TypedDict):
    """Where a node sends its reply: the reply exchange and the client's oid."""

    exchange: str
    routing_key: str


def request_body(
    method: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    destination: Sequence[str] | None = None,
    pattern: str | None = None,
    matcher: str | None = None,
    ticket: str | None = None,
    reply_to: ReplyTo | None = None,
) -> dict[str, Any]:
    """The JSON object of a request; ``ticket``/``reply_to`` only when a reply is wanted."""
    body: dict[str, Any] = {
        "method": method,
        "arguments": dict(arguments or {}),
        "destination": list(destination) if destination is not None else None,
        # Celery only sends pattern/matcher when both are given (app/control.py).
        "pattern": pattern if pattern and matcher else None,
        "matcher": matcher if pattern and matcher else None,
    }
    if reply_to is not None:
        body["ticket"] = ticket
        body["reply_to"] = dict(reply_to)
    return body


def request_message(
    body: Mapping[str, Any], *, clock: int, timeout: float | None, serializer: str = "json"
) -> Message:
    """Wrap a request body: header ``clock`` and absolute ``expires`` (0 without a timeout)."""
    data, content_type, content_encoding = codec.encode(dict(body), serializer)
    expires: float | int = time.time() + timeout if timeout else 0
    return Message(
        data,
        content_type,
        content_encoding,
        {"clock": clock, "expires": expires},
        delivery_mode=PERSISTENT,
    )


def reply_message(
    nodename: str, result: Any, *, ticket: str | None, clock: int, serializer: str = "json"
) -> Message:
    """A node's reply ``{nodename: result}`` with the request's ticket."""
    data, content_type, content_encoding = codec.encode({nodename: result}, serializer)
    return Message(
        data,
        content_type,
        content_encoding,
        {"ticket": ticket, "clock": clock},
        delivery_mode=TRANSIENT,
    )


def destination_matches(nodename: str, body: Mapping[str, Any]) -> bool:
    """Whether a node must handle a request (kombu ``Node.handle_message`` rules).

    A non-empty ``destination`` lists exact names; else ``pattern`` + ``matcher`` (glob or
    pcre, anchored at the start like ``re.match``) decide; else everyone handles it.
    """
    destination = body.get("destination")
    if destination:
        return nodename in destination
    pattern, matcher = body.get("pattern"), body.get("matcher")
    if pattern and matcher:
        if matcher == "glob":
            return fnmatch.fnmatch(nodename, pattern)
        if matcher == "pcre":
            return re.match(pattern, nodename) is not None
        return False
    return True
