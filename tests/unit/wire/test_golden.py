"""Golden tests: what real Celery 5.5/5.6/5.7 put on the wire, against our wire layer.

The captures under golden/ were recorded from real workers and CLIs (see golden/README.md).
We must read every one of them, and what we build for the same message must have the same
structure: keys, key order, headers, properties and flags. Only the JSON spacing of bodies
differs (kombu writes ``", "`` separators, orjson none; both parse the same).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from aiocelerymon.wire import codec, names
from aiocelerymon.wire.entities import Exchange, ExchangeKind, Message
from aiocelerymon.wire.event import decode_events, event
from aiocelerymon.wire.kombu_redis import RedisNaming, decode_envelope, encode_envelope
from aiocelerymon.wire.pidbox import ReplyTo, request_body, request_message

GOLDEN = Path(__file__).parent / "golden"
VERSIONS = sorted(p.name for p in (GOLDEN / "redis").iterdir() if p.is_dir())
MESSAGES = [
    "ping-request",
    "ping-request-destination",
    "ping-reply",
    "heartbeat-request",
    "worker-online",
    "worker-heartbeat",
    "task-sent",
    "task-multi",
]


def load(broker: str, version: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / broker / version / f"{name}.json").read_text())
    return data


def test_captures_cover_every_supported_minor():
    assert [v.rsplit(".", 1)[0] for v in VERSIONS] == ["celery-5.5", "celery-5.6", "celery-5.7"]
    for broker in ("redis", "amqp"):
        assert sorted(p.name for p in (GOLDEN / broker).iterdir() if p.is_dir()) == VERSIONS


# -- Redis: envelopes ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MESSAGES)
def test_we_read_every_redis_envelope_celery_writes(version, name):
    cap = load("redis", version, name)
    env = json.loads(cap["envelope"])
    d = decode_envelope(cap["envelope"].encode())
    assert codec.decode(d.body, d.content_type, d.content_encoding) == json.loads(cap["body_text"])
    assert dict(d.headers) == env["headers"]
    assert d.delivery_mode == env["properties"]["delivery_mode"]
    info = env["properties"]["delivery_info"]
    assert (d.exchange, d.routing_key) == (info["exchange"], info["routing_key"])
    naming = RedisNaming()
    if "channel" in cap:  # PUBLISHed: the channel is the one we compute for exchange/key
        assert naming.publish_channel(d.exchange, d.routing_key) == cap["channel"]
    else:  # LPUSHed by the worker's direct-exchange emulation to the reply queue's key
        assert cap["command"] == "LPUSH"
        assert cap["key"] == naming.queue_key(names.reply_queue_name(d.routing_key), 0)


def _shape(obj: Any) -> Any:
    """Keys (in order) and scalar values, recursively; used to compare envelopes structurally."""
    if isinstance(obj, dict):
        return [(k, _shape(v)) for k, v in obj.items()]
    return obj


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MESSAGES)
def test_our_redis_envelope_has_kombus_structure(version, name):
    cap = load("redis", version, name)
    theirs = json.loads(cap["envelope"])
    props = theirs["properties"]
    message = Message(
        body=codec.dumps(json.loads(cap["body_text"])),
        content_type=theirs["content-type"],
        content_encoding=theirs["content-encoding"],
        headers=theirs["headers"],
        delivery_mode=props["delivery_mode"],
        priority=props["priority"],
    )
    ours = json.loads(
        encode_envelope(
            message,
            exchange=props["delivery_info"]["exchange"],
            routing_key=props["delivery_info"]["routing_key"],
            delivery_tag=props["delivery_tag"],
        )
    )
    assert json.loads(base64.b64decode(ours.pop("body"))) == json.loads(
        base64.b64decode(theirs.pop("body"))
    )
    assert _shape(ours) == _shape(theirs)


@pytest.mark.parametrize("version", VERSIONS)
def test_reply_binding_member_and_key(version):
    cap = load("redis", version, "reply-binding")
    naming = RedisNaming()
    oid = cap["member"].split("\x06\x16")[0]
    assert naming.binding_key(names.reply_exchange().name) == cap["key"]
    assert naming.binding_member(oid, names.reply_queue_name(oid)) == cap["member"]
    assert bytes.fromhex(cap["member_hex"]) == cap["member"].encode()


# -- pidbox bodies and properties (both brokers) ---------------------------------------------


def _body_of(broker: str, cap: dict[str, Any]) -> Any:
    return json.loads(cap["body_text"] if broker == "redis" else cap["body"])


@pytest.mark.parametrize("broker", ["redis", "amqp"])
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["ping-request", "ping-request-destination"])
def test_our_ping_request_matches_celerys(broker, version, name):
    cap = load(broker, version, name)
    theirs = _body_of(broker, cap)
    reply_to = ReplyTo(**theirs["reply_to"])
    ours = request_body(
        theirs["method"],
        theirs["arguments"],
        destination=theirs["destination"],
        pattern=theirs["pattern"],
        matcher=theirs["matcher"],
        ticket=theirs["ticket"],
        reply_to=reply_to,
    )
    assert list(ours.items()) == list(theirs.items())  # same keys, same order, same values
    message = request_message(ours, clock=1, timeout=2.0)
    if broker == "redis":
        env = json.loads(cap["envelope"])
        headers, mode = env["headers"], env["properties"]["delivery_mode"]
        content = (env["content-type"], env["content-encoding"])
    else:
        props = cap["properties"]
        headers, mode = props["headers"], props["delivery_mode"]
        content = (props["content_type"], props["content_encoding"])
        assert (cap["exchange"], cap["routing_keys"]) == (names.pidbox_exchange().name, [""])
    assert list(message.headers) == list(headers) == ["clock", "expires"]
    assert message.delivery_mode == mode == 2
    assert (message.content_type, message.content_encoding) == content


@pytest.mark.parametrize("version", VERSIONS)
def test_heartbeat_cast_has_no_ticket(version):
    theirs = _body_of("amqp", load("amqp", version, "heartbeat-request"))
    assert list(request_body("heartbeat").items()) == list(theirs.items())


@pytest.mark.parametrize("broker", ["redis", "amqp"])
@pytest.mark.parametrize("version", VERSIONS)
def test_ping_reply_properties(broker, version):
    cap = load(broker, version, "ping-reply")
    body = _body_of(broker, cap)
    [(node, result)] = body.items()
    assert (node, result) == ("worker1@golden", {"ok": "pong"})
    if broker == "amqp":
        props = cap["properties"]
        assert props["delivery_mode"] == 1
        assert list(props["headers"]) == ["ticket", "clock"]
        assert cap["exchange"] == names.reply_exchange().name
        [queue] = cap["routed_queues"]
        assert queue == names.reply_queue_name(cap["routing_keys"][0])


# -- AMQP entities: flags RabbitMQ compares on redeclare -------------------------------------


def _exchange(entry: dict[str, Any]) -> Exchange:
    return Exchange(
        entry["name"], ExchangeKind(entry["type"]), entry["durable"], entry["auto_delete"]
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_exchange_flags_match_the_broker(version):
    cap = load("amqp", version, "entities")
    by_name = {e["name"]: e for e in cap["exchanges"]}
    assert _exchange(by_name["celery.pidbox"]) == names.pidbox_exchange()
    assert _exchange(by_name["reply.celery.pidbox"]) == names.reply_exchange()
    assert _exchange(by_name["celeryev"]) == names.event_exchange()


@pytest.mark.parametrize("version", VERSIONS)
def test_reply_queue_arguments_are_celerys_integers(version):
    cap = load("amqp", version, "entities")
    queues = cap["during ping (reply queue present)"]["queues"]
    [reply] = [q for q in queues if q["name"].endswith(".reply.celery.pidbox")]
    ours = names.reply_binding(reply["name"].split(".reply.")[0])
    args = {name: value for name, _kind, value in reply["arguments"]}
    assert args == {
        "x-expires": names.to_milliseconds(ours.expires),
        "x-message-ttl": names.to_milliseconds(ours.message_ttl),
    }
    assert (reply["durable"], reply["auto_delete"]) == (ours.durable, ours.auto_delete)
    # Celery flipped control_queue_exclusive to True in 5.7; ours are always exclusive.
    assert reply["exclusive"] is version.startswith("celery-5.7")


# -- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize("broker", ["redis", "amqp"])
@pytest.mark.parametrize("version", VERSIONS)
def test_task_multi_is_a_list_and_our_field_order_matches(broker, version):
    cap = load(broker, version, "task-multi")
    events = decode_events(_body_of(broker, cap))
    assert events
    for theirs in events:
        assert theirs["type"].startswith("task-")
        fields = {k: v for k, v in theirs.items() if k not in _COMMON}
        ours = event(
            theirs["type"],
            hostname=theirs["hostname"],
            clock=theirs["clock"],
            pid=theirs["pid"],
            timestamp=theirs["timestamp"],
            **fields,
        )
        assert list(ours) == list(theirs)
    # utcoffset is an int before Celery 5.7 and a float from 5.7 on.
    expected = float if version.startswith("celery-5.7") else int
    assert {type(e["utcoffset"]) for e in events} == {expected}


_COMMON = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"}


@pytest.mark.parametrize("broker", ["redis", "amqp"])
@pytest.mark.parametrize("version", VERSIONS)
def test_worker_events_are_single_objects(broker, version):
    for name in ("worker-online", "worker-heartbeat"):
        [ev] = decode_events(_body_of(broker, load(broker, version, name)))
        assert ev["type"] == name
        assert ev["sw_ident"] == "py-celery"
        assert ev["sw_ver"] == version.removeprefix("celery-")
