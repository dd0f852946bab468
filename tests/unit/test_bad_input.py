"""Hostile and broken input never crashes an event stream or a node, and pickle never runs.

Property-based (hypothesis) over what a broker can hand us: kombu envelopes (Redis), bodies,
headers, content types and encodings, truncated base64, huge and non-dict bodies, missing
fields and wrong types. Each bad message is counted and skipped; the stream or node goes on
with the next good one. The reverse direction too: every envelope we encode is one that
kombu's own Redis channel can read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import pickle
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiocelerymon import Client
from aiocelerymon.control.node import Node
from aiocelerymon.events import EventReceiver
from aiocelerymon.exceptions import DecodeError, ProtocolError
from aiocelerymon.transports.memory import MemoryTransport
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.entities import Message
from aiocelerymon.wire.event import event, event_message
from aiocelerymon.wire.kombu_redis import decode_envelope, encode_envelope

WITHIN = 10.0
CELERYEV = names.event_exchange()
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- what a broker may deliver --------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/x-python-serialize",
            "application/x-yaml",
            "application/x-msgpack",
            "application/data",
            "text/plain",
            "",
        ]
    ),
    st.text(max_size=30),
    st.none(),
)
encodings = st.one_of(
    st.sampled_from(
        [
            "utf-8",
            "binary",
            "latin-1",
            "utf-16",
            "utf-32",
            "ascii",
            "base64",
            "zlib",
            "rot13",
            "undefined",
            "raw_unicode_escape",
            "unicode_escape",
            "idna",
            "punycode",
            "nope",
        ]
    ),
    st.text(max_size=12),
    st.none(),
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": json_values,
        "hostname": json_values,
        "clock": json_values,
        "timestamp": json_values,
        "utcoffset": json_values,
        "uuid": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(codec.dumps),
    event_like.map(codec.dumps),
    st.lists(event_like, max_size=3).map(codec.dumps),
    st.builds(lambda n: b'{"type": "' + b"x" * n + b'"}', st.integers(0, 2_000_000)),
    st.sampled_from(
        [
            b'{"type": "worker-online", "clock": 123456789012345678901234567890}',
            b'{"type": "worker-online", "clock": 1e400, "timestamp": NaN, "utcoffset": Infinity}',
            b'{"type": "worker-online", "clock": "7", "timestamp": "now", "utcoffset": -2}',
            b'[{"type": "task-sent"}, 17, null, {"type": {"nested": 1}}]',
            rb'"\ud800"',
        ]
    ),
)
headers = st.dictionaries(st.text(max_size=10), json_values, max_size=4)


def good_event(n: int) -> Message:
    return event_message(event("worker-heartbeat", hostname=f"celery@good{n}", clock=n), "g")


# -- the event stream ---------------------------------------------------------------------------


@SETTINGS
@given(body=bodies, content_type=content_types, encoding=encodings, hdrs=headers)
async def test_event_stream_survives_any_message(
    body: bytes, content_type: str | None, encoding: str | None, hdrs: dict[str, Any]
) -> None:
    transport = MemoryTransport(f"memory://bad-{uuid.uuid4().hex}")
    async with transport:
        receiver = EventReceiver(transport)
        seen: list[dict[str, Any]] = []

        async def consume() -> None:
            async for ev in receiver.itercapture(wakeup=False):
                seen.append(ev)  # type: ignore[arg-type]
                if ev.get("hostname") == "celery@good2":
                    return

        task = asyncio.create_task(consume())
        async with asyncio.timeout(WITHIN):
            await receiver.ready.wait()
            await transport.publish(good_event(1), CELERYEV, "worker.heartbeat")
            bad = Message(body, content_type, encoding, hdrs)  # type: ignore[arg-type]
            await transport.publish(bad, CELERYEV, "task.whatever")
            await transport.publish(good_event(2), CELERYEV, "worker.heartbeat")
            await task
        good = [ev for ev in seen if str(ev.get("hostname", "")).startswith("celery@good")]
        assert [ev["hostname"] for ev in good] == ["celery@good1", "celery@good2"]
        # The bad message was either processed as events, or counted as malformed.
        assert receiver.malformed + (len(seen) - 2) >= 1 or body.strip() in (b"[]",)


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=300), json_values.map(codec.dumps)))
def test_any_redis_payload_decodes_or_is_a_decode_error(raw: bytes) -> None:
    # Anything else would escape the Redis adapter's handler, which counts and skips these.
    with contextlib.suppress(DecodeError, ValueError, TypeError):
        decode_envelope(raw)


envelope_fields = st.fixed_dictionaries(
    {},
    optional={
        "body": st.one_of(st.text(max_size=40), json_values),
        "content-type": json_values,
        "content-encoding": st.one_of(encodings, json_values),
        "headers": json_values,
        "properties": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "body_encoding": st.sampled_from(["base64", "plain", 3, None]),
                    "delivery_info": json_values,
                    "delivery_mode": json_values,
                    "priority": json_values,
                    "delivery_tag": json_values,
                },
            ),
        ),
    },
)


@SETTINGS
@given(env=envelope_fields, cut=st.integers(0, 7))
def test_any_kombu_shaped_envelope_decodes_or_is_a_decode_error(
    env: dict[str, Any], cut: int
) -> None:
    if isinstance(env.get("body"), str) and cut:
        env["body"] = base64.b64encode(env["body"].encode())[:-cut].decode()  # truncated base64
    try:
        delivery = decode_envelope(codec.dumps(env))
    except (DecodeError, ValueError, TypeError):
        return
    assert isinstance(delivery.body, bytes)
    assert isinstance(delivery.headers, dict)


# -- the node -----------------------------------------------------------------------------------


@SETTINGS
@given(
    method=json_values,
    arguments=json_values,
    destination=json_values,
    reply_to=st.one_of(json_values, st.just("ok")),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
async def test_node_survives_any_request(
    method: Any, arguments: Any, destination: Any, reply_to: Any, extra: dict[str, Any]
) -> None:
    async with Client(f"memory://node-bad-{uuid.uuid4().hex}") as client:
        node = Node(client, "svc@fuzz", unique_check_timeout=None)
        await node.start()
        try:
            body = {**extra, "method": method, "arguments": arguments}
            body["destination"] = destination
            if reply_to == "ok":
                await client.mailbox.listen()
                body["reply_to"] = {"exchange": client.mailbox.reply_exchange,
                                    "routing_key": client.mailbox.oid}  # fmt: skip
                body["ticket"] = str(uuid.uuid4())
            else:
                body["reply_to"] = reply_to
            data, ctype, enc = codec.encode(body)
            await client.transport.publish(
                Message(data, ctype, enc, {"clock": 1}), names.pidbox_exchange()
            )
            # The node still answers a well-formed request afterwards.
            async with asyncio.timeout(WITHIN):
                replies = await client.control.ping(destination=["svc@fuzz"], timeout=WITHIN)
            assert replies[0] == {"svc@fuzz": {"ok": "pong"}}
            assert node.serving
        finally:
            await node.aclose()


# -- pickle is refused, never deserialized --------------------------------------------------------

DETONATED: list[str] = []


def _detonate(who: str) -> None:
    DETONATED.append(who)


class Bomb:
    """Unpickling this calls _detonate: proof that pickle ran."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_detonate, ("unpickled",))


async def test_pickle_is_never_deserialized(caplog: pytest.LogCaptureFixture) -> None:
    payload = pickle.dumps({"type": "worker-online", "bomb": Bomb()})
    pickle.loads(pickle.dumps(Bomb()))  # the bomb works (sanity)
    assert DETONATED == ["unpickled"]
    DETONATED.clear()
    bad = Message(payload, "application/x-python-serialize", "binary", {})
    async with Client(f"memory://pickle-{uuid.uuid4().hex}") as client:
        node = Node(client, "svc@pickle", unique_check_timeout=None)
        await node.start()
        receiver = EventReceiver(client.transport)
        done = asyncio.Event()

        async def consume() -> None:
            async for ev in receiver.itercapture(wakeup=False):
                if ev.get("hostname") == "celery@good1":  # type: ignore[union-attr]
                    done.set()
                    return

        with caplog.at_level(logging.WARNING):
            task = asyncio.create_task(consume())
            async with asyncio.timeout(WITHIN):
                await receiver.ready.wait()
                await client.transport.publish(bad, CELERYEV, "worker.online")
                await client.transport.publish(bad, names.pidbox_exchange())
                await client.transport.publish(good_event(1), CELERYEV, "worker.heartbeat")
                await task
                replies = await client.control.ping(destination=["svc@pickle"], timeout=WITHIN)
        assert replies[0] == {"svc@pickle": {"ok": "pong"}}
        assert (receiver.malformed, node.malformed) == (1, 1)
        await node.aclose()
    assert DETONATED == []
    refused = [r for r in caplog.records if "x-python-serialize" in r.getMessage()]
    assert len(refused) == 2  # once by the stream, once by the node
    with pytest.raises(ProtocolError):
        codec.decode(payload, "application/x-python-serialize", "binary",
                     frozenset({"application/x-python-serialize"}))  # fmt: skip
    assert DETONATED == []


# -- what we emit, kombu reads ---------------------------------------------------------------------


@SETTINGS
@given(
    body=st.binary(max_size=300),
    hdrs=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    priority=st.one_of(st.none(), st.integers(0, 255)),
    exchange=st.text(max_size=20),
    routing_key=st.text(max_size=20),
)
def test_every_envelope_we_encode_is_read_by_kombu(
    body: bytes, hdrs: dict[str, Any], priority: int | None, exchange: str, routing_key: str
) -> None:
    from kombu.transport.redis import Channel
    from kombu.transport.virtual.base import Message as KombuMessage

    raw = encode_envelope(
        Message(body, "application/json", "utf-8", hdrs, priority=priority),
        exchange=exchange,
        routing_key=routing_key,
    )
    # kombu's Redis channel: loads() the payload, then Channel.Message(payload, channel=...).
    payload = json.loads(raw)
    channel = Channel.__new__(Channel)
    message = KombuMessage(payload, channel=channel)
    assert message.delivery_tag  # Celery <= 5.6 workers die without it
    assert message.body == body
    assert message.delivery_info["exchange"] == exchange
    assert message.delivery_info["routing_key"] == routing_key
    assert payload["properties"]["delivery_tag"] == message.delivery_tag
