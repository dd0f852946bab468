"""Pidbox and event messages have kombu's shape: keys, order, headers, delivery modes."""

from __future__ import annotations

import json
import time

import pytest

from aiocelerymon.exceptions import DecodeError
from aiocelerymon.wire.event import decode_events, event, event_message
from aiocelerymon.wire.pidbox import (
    ReplyTo,
    destination_matches,
    reply_message,
    request_body,
    request_message,
)


def test_request_with_reply_has_kombus_keys_in_order():
    body = request_body(
        "ping", ticket="t1", reply_to=ReplyTo(exchange="reply.celery.pidbox", routing_key="oid")
    )
    assert list(body) == [
        "method",
        "arguments",
        "destination",
        "pattern",
        "matcher",
        "ticket",
        "reply_to",
    ]
    assert body["reply_to"] == {"exchange": "reply.celery.pidbox", "routing_key": "oid"}
    assert (body["arguments"], body["destination"]) == ({}, None)


def test_cast_has_no_ticket_or_reply_to_and_pattern_needs_matcher():
    body = request_body("heartbeat", destination=("a@h",), pattern="a*")
    assert list(body) == ["method", "arguments", "destination", "pattern", "matcher"]
    assert (body["destination"], body["pattern"], body["matcher"]) == (["a@h"], None, None)
    both = request_body("ping", pattern="a*", matcher="glob")
    assert (both["pattern"], both["matcher"]) == ("a*", "glob")


def test_request_message_headers_and_mode():
    before = time.time()
    m = request_message(request_body("ping"), clock=7, timeout=1.5)
    assert m.delivery_mode == 2
    assert m.headers["clock"] == 7
    assert before + 1.5 <= m.headers["expires"] <= time.time() + 1.5
    assert request_message(request_body("ping"), clock=1, timeout=None).headers["expires"] == 0
    assert json.loads(m.body)["method"] == "ping"


def test_reply_message():
    m = reply_message("w1@h", {"ok": "pong"}, ticket="t", clock=3)
    assert (m.delivery_mode, dict(m.headers)) == (1, {"ticket": "t", "clock": 3})
    assert json.loads(m.body) == {"w1@h": {"ok": "pong"}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, True),
        ({"destination": []}, True),  # an empty list means everyone, as in kombu
        ({"destination": ["w1@h"]}, True),
        ({"destination": ["w2@h"]}, False),
        ({"pattern": "w*@h", "matcher": "glob"}, True),
        ({"pattern": "x*", "matcher": "glob"}, False),
        ({"pattern": r"w\d", "matcher": "pcre"}, True),
        ({"pattern": r"\d", "matcher": "pcre"}, False),  # re.match anchors at the start
        ({"pattern": "w*", "matcher": None}, True),  # pattern without matcher is ignored
        ({"pattern": "w*", "matcher": "unknown"}, False),
    ],
)
def test_destination_rules(body, expected):
    assert destination_matches("w1@h", body) is expected


def test_event_field_order_and_batches():
    ev = event(
        "task-succeeded", hostname="w@h", clock=5, pid=9, timestamp=1.5, uuid="u", result="4"
    )
    assert list(ev) == [
        "hostname",
        "utcoffset",
        "pid",
        "clock",
        "uuid",
        "result",
        "timestamp",
        "type",
    ]
    single = event_message(ev, "w@h")
    assert (single.delivery_mode, dict(single.headers)) == (1, {"hostname": "w@h"})
    assert json.loads(single.body) == ev
    batch = event_message([ev, ev], "w@h")
    assert decode_events(json.loads(batch.body)) == [ev, ev]
    assert decode_events(ev) == [ev]
    for bad in ("text", [1, 2], None):
        with pytest.raises(DecodeError):
            decode_events(bad)
