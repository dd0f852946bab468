"""kombu's Redis naming and envelope, checked against the rules in the wire reference (§3)."""

from __future__ import annotations

import base64
import json

import pytest

from aiocelerymon.exceptions import ConfigurationError, DecodeError
from aiocelerymon.wire.entities import Message
from aiocelerymon.wire.kombu_redis import RedisNaming, decode_envelope, encode_envelope


def test_default_channels_and_keys():
    n = RedisNaming()
    assert n.publish_channel("celery.pidbox") == "/0.celery.pidbox"
    assert n.publish_channel("celeryev", "task.multi") == "/0.celeryev/task.multi"
    assert n.subscribe_patterns("celery.pidbox") == ("/0.celery.pidbox",)
    assert n.subscribe_patterns("celeryev", "#") == ("/0.celeryev/*", "/0.celeryev")
    assert n.subscribe_patterns("celeryev", "worker.#") == ("/0.celeryev/worker.*",)
    assert n.binding_key("reply.celery.pidbox") == "_kombu.binding.reply.celery.pidbox"
    assert n.binding_member("oid", "oid.reply.celery.pidbox") == (
        "oid\x06\x16\x06\x16oid.reply.celery.pidbox"
    )
    assert n.parse_member("rk\x06\x16\x06\x16q") == ("rk", "", "q")
    assert n.queue_keys("q") == ("q", "q\x06\x163", "q\x06\x166", "q\x06\x169")


def test_db_and_global_keyprefix_go_everywhere_but_inside_names():
    n = RedisNaming.from_options(5, {"global_keyprefix": "pfx:"})
    assert n.publish_channel("celery.pidbox") == "pfx:/5.celery.pidbox"
    assert n.subscribe_patterns("celeryev", "#") == ("pfx:/5.celeryev/*", "pfx:/5.celeryev")
    assert n.binding_key("reply.celery.pidbox") == "pfx:_kombu.binding.reply.celery.pidbox"
    # Binding members name the queue unprefixed; kombu prefixes when it pushes.
    assert n.binding_member("rk", "q") == "rk\x06\x16\x06\x16q"
    assert n.queue_key("q", 9) == "pfx:q\x06\x169"
    assert n.deadlines_key == "pfx:_kombu.binding_deadlines"
    assert n.permanent_key("x") == "pfx:_kombu.binding_permanent.x"


def test_fanout_options():
    assert RedisNaming.from_options(2, {"fanout_prefix": False}).publish_channel("e") == "e"
    custom = RedisNaming.from_options(3, {"fanout_prefix": "{db}/"})
    assert custom.publish_channel("e", "rk") == "3/e/rk"
    flat = RedisNaming.from_options(0, {"fanout_patterns": False})
    assert flat.publish_channel("celeryev", "task.multi") == "/0.celeryev"
    assert flat.subscribe_patterns("celeryev", "#") == ("/0.celeryev",)
    with pytest.raises(ConfigurationError):
        RedisNaming.from_options(0, {"priority_steps": [1, 2]})
    with pytest.raises(ConfigurationError):
        RedisNaming.from_options(0, {"fanout_prefix": 3})


@pytest.mark.parametrize(
    ("priority", "key"),
    [
        (0, "q"),
        (2, "q"),
        (3, "q\x06\x163"),
        (5, "q\x06\x163"),
        (9, "q\x06\x169"),
        (42, "q\x06\x169"),
        (-1, "q"),
    ],
)
def test_priority_keys(priority, key):
    assert RedisNaming().queue_key("q", priority) == key


def test_envelope_has_kombus_keys_in_kombus_order():
    message = Message(b'{"x": 1}', headers={"clock": 1, "expires": 2.5}, delivery_mode=2)
    raw = encode_envelope(message, exchange="celery.pidbox", routing_key="")
    env = json.loads(raw)
    assert list(env) == ["body", "content-encoding", "content-type", "headers", "properties"]
    assert list(env["properties"]) == [
        "delivery_mode",
        "delivery_info",
        "priority",
        "body_encoding",
        "delivery_tag",
    ]
    assert base64.b64decode(env["body"]) == b'{"x": 1}'
    assert env["properties"]["delivery_info"] == {"exchange": "celery.pidbox", "routing_key": ""}
    assert env["properties"]["delivery_mode"] == 2
    assert env["properties"]["delivery_tag"]  # never omitted: it kills Celery <= 5.6 workers
    other = json.loads(encode_envelope(message, exchange="e", routing_key=""))
    assert other["properties"]["delivery_tag"] != env["properties"]["delivery_tag"]


def test_envelope_round_trip():
    message = Message(b"\x00\xffbinary", "application/x-custom", "binary", {"a": [1]}, 1, 6)
    d = decode_envelope(encode_envelope(message, exchange="ex", routing_key="rk"), generation=3)
    assert (d.body, d.content_type, d.content_encoding) == (message.body, *message_ct(message))
    assert (dict(d.headers), d.exchange, d.routing_key) == ({"a": [1]}, "ex", "rk")
    assert (d.delivery_mode, d.priority, d.generation) == (1, 6, 3)


def message_ct(m: Message) -> tuple[str, str]:
    return m.content_type, m.content_encoding


def test_plain_body_without_body_encoding_is_accepted():
    raw = json.dumps({"body": '{"k": 1}', "content-type": "application/json"})
    d = decode_envelope(raw)
    assert d.body == b'{"k": 1}'
    assert d.headers == {}
    assert d.exchange == ""


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"not json", "invalid JSON"),
        (b"[1, 2]", "not an object"),
        (b"{}", "no body"),
        (b'{"body": "###", "properties": {"body_encoding": "base64"}}', "base64"),
        (b'{"body": "e30=", "properties": []}', "must be objects"),
    ],
)
def test_malformed_envelopes_raise_decode_error(raw, match):
    with pytest.raises(DecodeError, match=match):
        decode_envelope(raw)


BASE64_BODIES = [
    base64.b64encode(b'[{"type": "task-started"}]').decode(),
    "",
    "###",
    "eyJ4IjogMX0",  # missing padding
    "eyJ4I jogMX0=",  # whitespace
    "eyJ4IjogMX0=\n",
    "é",
]


@pytest.mark.parametrize("body", BASE64_BODIES)
def test_base64_bodies_decode_alike_with_and_without_pybase64(body, monkeypatch):
    from aiocelerymon.wire import kombu_redis

    raw = json.dumps({"body": body, "properties": {"body_encoding": "base64"}})

    def outcome():
        try:
            return decode_envelope(raw).body
        except DecodeError:
            return DecodeError

    fast = outcome()
    monkeypatch.setattr(kombu_redis, "_b64decode", base64.b64decode)
    assert outcome() == fast
