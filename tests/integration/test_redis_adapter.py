"""RedisTransport against a real server, observed with a raw redis.asyncio client.

These check what kombu peers see: exact key and channel names (db, ``global_keyprefix``), binding
members, kombu 5.7 deadlines, envelopes, priority lists, cleanup that spares ``unacked*``, and
how bad payloads, ports and passwords are handled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from aiocelerymon.exceptions import AuthenticationError, ConnectError
from aiocelerymon.transports import (
    Binding,
    Exchange,
    ExchangeKind,
    Message,
    TransportState,
)
from aiocelerymon.transports import redis as redis_adapter
from aiocelerymon.transports.redis import RedisTransport
from tests.support import brokers
from tests.support.contract import connected, receive, uid
from tests.support.proxy import Proxy

pytestmark = [pytest.mark.integration, pytest.mark.redis]

SEP = b"\x06\x16"
PIDBOX = Exchange("celery.pidbox", ExchangeKind.FANOUT)
REPLY = Exchange("reply.celery.pidbox", ExchangeKind.DIRECT)
CELERYEV = Exchange("celeryev", ExchangeKind.TOPIC, durable=True)
DEADLINE = 10.0


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
async def make(redis_server: brokers.RedisServer) -> AsyncIterator[Any]:
    """``await make(db=0, prefix="", **options)`` -> a connected RedisTransport."""

    def build(db: int = 0, prefix: str = "", **options: Any) -> RedisTransport:
        opts = {"global_keyprefix": prefix} if prefix else None
        return RedisTransport(redis_server.url_for(db), transport_options=opts, **options)

    async with connected(build) as factory:
        yield factory


@pytest.fixture
async def raw5(redis_server: brokers.RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client on db 5 (pub/sub ignores the db; keys do not)."""
    client = aioredis.Redis.from_url(redis_server.url_for(5))
    yield client
    await client.aclose()


async def wait_for(predicate: Any, timeout: float = DEADLINE) -> None:
    """Poll server-side state that has no event to await."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


def reply_binding(oid: str, **kw: Any) -> Binding:
    # What a Celery client binds: routing key = oid, queue = "<oid>.reply.celery.pidbox".
    return Binding(REPLY, routing_key=oid, queue=f"{oid}.reply.celery.pidbox", **kw)


@contextlib.contextmanager
def throwaway_redis(*args: str) -> Iterator[tuple[int, Path]]:
    """A private redis-server (for config changes the shared one must not see)."""
    executable = shutil.which("redis-server")
    if executable is None:
        brokers.unavailable("redis-server is not on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="aiocelerymon-redis-test-"))
    port = brokers.free_port()
    sock = workdir / "redis.sock"
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir), "--unixsocket", str(sock),
            "--unixsocketperm", "700", *args]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server {argv} did not start")
            time.sleep(0.02)
        yield port, sock
    finally:
        brokers.stop_process_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Names on the wire


async def test_pidbox_publish_channel_has_prefix_and_db(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5, prefix="pfx:")
    pubsub = raw5.pubsub()
    await pubsub.subscribe("pfx:/5.celery.pidbox")
    try:
        await t.publish(Message(b'{"method": "ping"}', delivery_mode=2), PIDBOX, "")
        async with asyncio.timeout(DEADLINE):
            while True:  # skip the subscribe confirmation
                msg = await pubsub.get_message(timeout=DEADLINE)
                if msg is not None and msg["type"] == "message":
                    break
        assert msg["channel"] == b"pfx:/5.celery.pidbox"
        env = json.loads(msg["data"])
        assert env["properties"]["delivery_info"] == {
            "exchange": "celery.pidbox",  # names inside envelopes are never prefixed
            "routing_key": "",
        }
        assert env["properties"]["delivery_mode"] == 2
    finally:
        await pubsub.aclose()


async def test_direct_binding_member_and_deadline(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5, prefix="pfx:")
    oid = str(uuid.uuid4())
    await raw5.zrem("pfx:_kombu.binding_deadlines", "reply.celery.pidbox")  # a clean slate
    seconds, micros = await raw5.time()
    before_ms = seconds * 1000 + micros // 1000
    async with t.subscribe(reply_binding(oid, expires=10.0)):
        members = await raw5.smembers("pfx:_kombu.binding.reply.celery.pidbox")
        member = oid.encode() + SEP + SEP + f"{oid}.reply.celery.pidbox".encode()
        assert member in members
        # Only in the prefixed db-5 key space.
        assert not await raw5.exists("_kombu.binding.reply.celery.pidbox")
        score = await raw5.zscore("pfx:_kombu.binding_deadlines", "reply.celery.pidbox")
        assert score is not None
        # max(2 * 10 s, 1 h) from the server clock.
        assert before_ms + 3_600_000 <= score < before_ms + 3_600_000 + 60_000
    assert member not in await raw5.smembers("pfx:_kombu.binding.reply.celery.pidbox")


async def test_deadline_is_twice_expires_and_never_lowered(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5, prefix="pfx:")
    ex = Exchange(f"reply.{uid()}.pidbox", ExchangeKind.DIRECT)
    seconds, micros = await raw5.time()
    now_ms = seconds * 1000 + micros // 1000
    async with t.subscribe(Binding(ex, "a", queue=f"q.{uid()}", expires=7200.0)):
        long_score = await raw5.zscore("pfx:_kombu.binding_deadlines", ex.name)
        assert long_score is not None
        assert now_ms + 14_400_000 <= long_score < now_ms + 14_400_000 + 60_000
        # A shorter-lived binding on the same exchange must not pull the deadline in (ZADD GT).
        async with t.subscribe(Binding(ex, "b", queue=f"q.{uid()}", expires=10.0)):
            assert await raw5.zscore("pfx:_kombu.binding_deadlines", ex.name) == long_score


async def test_direct_binding_is_restored_after_a_sweep(
    make: Any, raw5: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_adapter, "BINDING_REFRESH_INTERVAL", 0.0)  # every BRPOP round
    t = await make(db=5, prefix="pfx:")
    oid = str(uuid.uuid4())
    table, deadlines = "pfx:_kombu.binding.reply.celery.pidbox", "pfx:_kombu.binding_deadlines"
    async with t.subscribe(reply_binding(oid, expires=10.0)) as sub:
        member = f"{oid}\x06\x16\x06\x16{sub.queue}".encode()
        # What kombu 5.7's sweep does to an overdue table.
        await raw5.delete(table)
        await raw5.zrem(deadlines, "reply.celery.pidbox")

        async def restored() -> bool:
            score = await raw5.zscore(deadlines, "reply.celery.pidbox")
            return member in await raw5.smembers(table) and score is not None

        await wait_for(restored)
        await t.publish(Message(b'"routed again"'), REPLY, oid)
        assert (await receive(sub)).body == b'"routed again"'
        # The consumer refreshes right after a delivery, so this cancels it mid-command:
        # closing must still be prompt (redis-py with a socket_timeout swallowed that cancel).
        started = time.monotonic()
        await sub.aclose()
        assert time.monotonic() - started < 0.5


async def test_event_subscription_patterns_and_bookkeeping(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5, prefix="pfx:")
    async with t.subscribe(Binding(CELERYEV, routing_key="#")) as sub:
        member = b"#" + SEP + SEP + sub.queue.encode()
        assert member in await raw5.smembers("pfx:_kombu.binding.celeryev")
        env = json.dumps(
            {
                "body": base64.b64encode(b'[{"type": "task-sent"}]').decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {"hostname": "celery@h"},
                "properties": {
                    "delivery_mode": 1,
                    "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        )
        # fanout_patterns=True publishers use /<db>.celeryev/<rk>; False ones the bare channel.
        assert await raw5.publish("pfx:/5.celeryev/task.multi", env) == 1
        assert await raw5.publish("pfx:/5.celeryev", env) == 1
        first, second = await receive(sub), await receive(sub)
        assert first.body == second.body == b'[{"type": "task-sent"}]'
        assert first.routing_key == "task.multi"
        # Our own publish goes to the routing-key channel.
        await t.publish(Message(b"[]"), CELERYEV, "worker.heartbeat")
        assert (await receive(sub)).routing_key == "worker.heartbeat"
    assert member not in await raw5.smembers("pfx:_kombu.binding.celeryev")


async def test_shared_pattern_is_unsubscribed_with_its_last_subscription(
    make: Any, raw5: aioredis.Redis
) -> None:
    t = await make()
    ex = Exchange(f"t.shared.{uid()}", ExchangeKind.FANOUT)
    channel = f"/0.{ex.name}"

    async def numpat() -> int:
        return int(await raw5.pubsub_numpat())

    base = await numpat()
    one = await t.subscribe(Binding(ex)).start()
    two = await t.subscribe(Binding(ex)).start()
    assert await numpat() == base + 1  # one PSUBSCRIBE for both
    await one.aclose()
    assert await numpat() == base + 1
    assert await raw5.publish(channel, _envelope(b'"still"', ex.name)) == 1
    assert (await receive(two)).body == b'"still"'
    await two.aclose()
    assert await numpat() == base


def _envelope(body: bytes, exchange: str, routing_key: str = "") -> str:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {},
            "properties": {
                "delivery_mode": 1,
                "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


# --------------------------------------------------------------------------------------------
# Envelopes


async def test_direct_publish_pushes_kombu_envelope(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5, prefix="pfx:")
    oid = str(uuid.uuid4())
    queue = f"{oid}.reply.celery.pidbox"
    # What a kombu client does before publishing a request: bind its reply queue.
    await raw5.sadd("pfx:_kombu.binding.reply.celery.pidbox", f"{oid}\x06\x16\x06\x16{queue}")
    try:
        body = b'{"celery@host1": {"ok": "pong"}}'
        headers = {"ticket": str(uuid.uuid4()), "clock": 3}
        await t.publish(Message(body, headers=headers), REPLY, oid)
        raw = await raw5.rpop(f"pfx:{queue}")
        assert isinstance(raw, bytes)
        env = json.loads(raw)
        assert list(env) == ["body", "content-encoding", "content-type", "headers", "properties"]
        assert base64.b64decode(env["body"], validate=True) == body
        assert (env["content-encoding"], env["content-type"]) == ("utf-8", "application/json")
        assert env["headers"] == headers
        props = env["properties"]
        assert list(props) == [
            "delivery_mode",
            "delivery_info",
            "priority",
            "body_encoding",
            "delivery_tag",
        ]
        assert props["delivery_info"] == {"exchange": "reply.celery.pidbox", "routing_key": oid}
        assert (props["delivery_mode"], props["priority"], props["body_encoding"]) == (
            1,
            0,
            "base64",
        )
        uuid.UUID(props["delivery_tag"])  # present and a uuid: pre-5.7 workers die without it
        # Nothing was pushed anywhere else.
        assert await raw5.keys(f"*{oid}*") == []
    finally:
        await raw5.delete("pfx:_kombu.binding.reply.celery.pidbox")


async def test_kombu_envelope_is_decoded(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5)
    oid = str(uuid.uuid4())
    async with t.subscribe(reply_binding(oid)) as sub:
        # Byte-for-byte what a Celery worker LPUSHes (stdlib json, ", "/": " separators).
        reply = (
            '{"body": "eyJjZWxlcnlAaG9zdDEiOiB7Im9rIjogInBvbmcifX0=", "content-encoding": '
            '"utf-8", "content-type": "application/json", "headers": {"ticket": "t-1", '
            '"clock": 3}, "properties": {"delivery_mode": 1, "delivery_info": {"exchange": '
            f'"reply.celery.pidbox", "routing_key": "{oid}"}}, "priority": 0, '
            '"body_encoding": "base64", "delivery_tag": "12345678-1234-4234-8234-123456789abc"}}'
        )
        await raw5.lpush(sub.queue, reply)
        d = await receive(sub)
    assert d.body == b'{"celery@host1": {"ok": "pong"}}'
    assert dict(d.headers) == {"ticket": "t-1", "clock": 3}
    assert (d.exchange, d.routing_key, d.delivery_mode) == ("reply.celery.pidbox", oid, 1)


# --------------------------------------------------------------------------------------------
# Priorities


async def test_priority_lists(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5, prefix="pfx:")
    ex = Exchange(f"t.pri.{uid()}", ExchangeKind.DIRECT)
    queue = f"q.{uid()}"
    member = f"k\x06\x16\x06\x16{queue}"
    await raw5.sadd(f"pfx:_kombu.binding.{ex.name}", member)
    await t.publish(Message(b'"nine"', priority=9), ex, "k")
    await t.publish(Message(b'"five"', priority=5), ex, "k")
    await t.publish(Message(b'"zero"', priority=0), ex, "k")
    # kombu's step = largest of (0, 3, 6, 9) <= priority; step 0 is the bare queue name.
    assert await raw5.lrange(f"pfx:{queue}\x06\x169", 0, -1) != []
    assert await raw5.llen(f"pfx:{queue}\x06\x169") == 1
    assert await raw5.llen(f"pfx:{queue}\x06\x163") == 1
    assert await raw5.llen(f"pfx:{queue}") == 1
    # BRPOP lists the lowest step first: on Redis, priority 0 is consumed first (kombu).
    async with t.subscribe(Binding(ex, "k", queue=queue)) as sub:
        got = [(await receive(sub)).body for _ in range(3)]
    assert got == [b'"zero"', b'"five"', b'"nine"']
    assert await raw5.smembers(f"pfx:_kombu.binding.{ex.name}") == set()


# --------------------------------------------------------------------------------------------
# Cleanup


async def test_aclose_removes_ours_and_spares_unacked(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5, prefix="pfx:")
    # kombu's reliable-delivery keys of task consumers, prefixed (kombu >= 5.2) and not.
    unacked = [f"{p}{name}" for p in ("pfx:", "") for name in ("unacked", "unacked_index")]
    unacked += ["pfx:unacked_mutex", "unacked_mutex"]
    for prefix in ("pfx:", ""):
        await raw5.hset(f"{prefix}unacked", "tag-1", '[{"body": "x"}, "", "celery"]')
        await raw5.zadd(f"{prefix}unacked_index", {"tag-1": 1700000000.0})
        await raw5.set(f"{prefix}unacked_mutex", "someone")
    snapshot = {key: await raw5.dump(key) for key in unacked}
    try:
        oid = str(uuid.uuid4())
        direct = await t.subscribe(reply_binding(oid, expires=10.0)).start()
        events = await t.subscribe(Binding(CELERYEV, "#")).start()
        await t.publish(Message(b'"r"'), REPLY, oid)
        assert (await receive(direct)).body == b'"r"'
        queue_keys = [f"pfx:{direct.queue}"] + [f"pfx:{direct.queue}\x06\x16{p}" for p in (3, 6, 9)]
        async with raw5.monitor() as monitor:
            await t.aclose()
            commands: list[str] = []
            async with asyncio.timeout(DEADLINE):
                while not any(c.startswith("DEL ") and oid in c for c in commands):
                    commands.append((await monitor.next_command())["command"])
        dels = [c for c in commands if c.startswith("DEL ")]
        assert len(dels) == 1 and len(dels[0].split(" ")) == 5
        assert not any("unacked" in c for c in commands)
        assert await raw5.exists(*queue_keys) == 0
        member = f"{oid}\x06\x16\x06\x16{direct.queue}".encode()
        assert member not in await raw5.smembers("pfx:_kombu.binding.reply.celery.pidbox")
        ev_member = b"#" + SEP + SEP + events.queue.encode()
        assert ev_member not in await raw5.smembers("pfx:_kombu.binding.celeryev")
        assert {key: await raw5.dump(key) for key in unacked} == snapshot
        assert t.state is TransportState.CLOSED
    finally:
        await raw5.delete(*unacked)


async def test_durable_queue_keeps_binding_and_backlog(make: Any, raw5: aioredis.Redis) -> None:
    t = await make(db=5)
    ex = Exchange(f"t.keep.{uid()}", ExchangeKind.DIRECT)
    queue = f"pipeline.{uid()}"
    table, permanent = f"_kombu.binding.{ex.name}", f"_kombu.binding_permanent.{ex.name}"
    b = Binding(ex, "k", queue=queue, exclusive=False, durable=True, auto_delete=False)
    try:
        async with t.subscribe(b):
            pass
        member = f"k\x06\x16\x06\x16{queue}".encode()
        assert await raw5.smembers(table) == {member}
        # No expires: kombu 5.7 lists it as permanent, so its sweep keeps the table.
        assert await raw5.smembers(permanent) == {member}
        # Like a durable RabbitMQ queue, it stays bound and collects messages with no consumer.
        await t.publish(Message(b'"kept"'), ex, "k")
        assert await raw5.llen(queue) == 1
        async with t.subscribe(b) as sub:
            assert (await receive(sub)).body == b'"kept"'
    finally:
        await raw5.delete(table, permanent, queue)


# --------------------------------------------------------------------------------------------
# Bad input and reconnects


async def test_malformed_payloads_are_counted_and_skipped(
    make: Any, raw5: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    t = await make(db=5)
    ex = Exchange(f"t.bad.{uid()}", ExchangeKind.FANOUT)
    garbage = b"{not json" + b"x" * 10_000
    with caplog.at_level(logging.WARNING, logger="aiocelerymon.transport.redis"):
        async with t.subscribe(Binding(ex)) as sub:
            assert await raw5.publish(f"/5.{ex.name}", garbage) == 1
            assert await raw5.publish(f"/5.{ex.name}", b'["not", "an object"]') == 1
            await t.publish(Message(b'"good"'), ex)
            d = await receive(sub)
            assert d.body == b'"good"'
        assert t.malformed == 2
        oid = str(uuid.uuid4())
        async with t.subscribe(reply_binding(oid)) as direct:
            await raw5.lpush(direct.queue, b"\xff\xfe")
            await t.publish(Message(b'"also good"'), REPLY, oid)
            assert (await receive(direct)).body == b'"also good"'
        assert t.malformed == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(len(r.getMessage()) < 600 for r in warnings)  # a bounded excerpt, not 10 kB
    assert t.state is TransportState.CONNECTED


async def test_direct_subscription_survives_a_broker_side_cut(
    make: Any, raw5: aioredis.Redis, redis_server: brokers.RedisServer
) -> None:
    from tests.integration.test_redis_contract import kill_clients

    t, pub = await make(db=5), await make(db=5)
    oid = str(uuid.uuid4())
    async with t.subscribe(reply_binding(oid, expires=10.0)) as sub:
        await kill_clients(redis_server.url_for(5))
        # The list outlives the connection: a reply pushed during the outage is not lost.
        await raw5.lpush(sub.queue, _envelope(b'"during"', REPLY.name, oid))
        assert (await receive(sub)).body == b'"during"'
        await wait_for(lambda: _is_connected(t))
        await pub.publish(Message(b'"after"'), REPLY, oid)
        d = await receive(sub)
        assert (d.body, d.generation) == (b'"after"', 1)
        assert sub.generation == 1


async def test_subscription_closed_during_an_outage_is_cleaned_up_later() -> None:
    with throwaway_redis() as (port, _sock):
        admin = aioredis.Redis(host="127.0.0.1", port=port)
        t = RedisTransport(f"redis://127.0.0.1:{port}/0")
        try:
            await t.connect()
            oid = str(uuid.uuid4())
            sub = await t.subscribe(reply_binding(oid, expires=10.0)).start()
            table = "_kombu.binding.reply.celery.pidbox"
            member = f"{oid}\x06\x16\x06\x16{sub.queue}".encode()
            assert await admin.smembers(table) == {member}
            # An outage that lasts: connections cut, and reconnects refused until we allow them.
            await admin.config_set("requirepass", "closed-for-now")
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await wait_for(lambda: _is_state(t, TransportState.RECONNECTING))
            await sub.aclose()  # nothing can be removed on the server right now
            assert await admin.smembers(table) == {member}
            await admin.config_set("requirepass", "")
            await wait_for(lambda: _is_connected(t))
            assert await admin.smembers(table) == set()
        finally:
            await t.aclose()
            await admin.aclose()


async def _is_connected(t: RedisTransport) -> bool:
    return t.state is TransportState.CONNECTED


async def test_silent_pubsub_connection_is_detected(
    make: Any,
    raw5: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A paused server answers nothing, as a half-open TCP connection would look.
    monkeypatch.setattr(redis_adapter, "PUBSUB_HEALTH_INTERVAL", 0.1)
    t, pub = await make(), await make()
    ex = Exchange(f"t.hc.{uid()}", ExchangeKind.FANOUT)
    async with t.subscribe(Binding(ex)) as sub:
        await raw5.execute_command("CLIENT", "PAUSE", "600", "ALL")
        await wait_for(lambda: _is_state(t, TransportState.RECONNECTING))
        async with asyncio.timeout(DEADLINE):
            while True:
                await pub.publish(Message(b'"back"'), ex)
                with contextlib.suppress(TimeoutError):
                    d = await receive(sub, timeout=0.2)
                    break
        assert (d.body, d.generation) == (b'"back"', 1)


async def _is_state(t: RedisTransport, state: TransportState) -> bool:
    return t.state is state


async def test_subscribe_returns_once_the_server_confirmed(
    redis_server: brokers.RedisServer, raw5: aioredis.Redis
) -> None:
    parts = urlsplit(redis_server.url)
    async with Proxy(parts.port or 6379, parts.hostname or "127.0.0.1") as proxy:
        t = RedisTransport(f"redis://127.0.0.1:{proxy.port}/0")
        await t.connect()
        try:
            proxy.delay = 0.2  # the PSUBSCRIBE now reaches Redis 0.2 s after it was sent
            ex = Exchange(f"t.confirm.{uid()}", ExchangeKind.FANOUT)
            async with t.subscribe(Binding(ex)) as sub:
                # A publisher that does not go through the proxy is heard at once.
                assert await raw5.publish(f"/0.{ex.name}", _envelope(b'"now"', ex.name)) == 1
                assert (await receive(sub)).body == b'"now"'
        finally:
            await t.aclose()


# --------------------------------------------------------------------------------------------
# Connecting


async def test_wrong_port_fails_fast_with_connect_error() -> None:
    port = brokers.free_port()
    t = RedisTransport(f"redis://:hunter2@127.0.0.1:{port}/0", connect_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert time.monotonic() - started < 2.0
    assert not isinstance(info.value, AuthenticationError)
    assert "hunter2" not in str(info.value)
    assert t.state is TransportState.IDLE
    await t.aclose()


async def test_unreachable_host_fails_within_connect_timeout() -> None:
    # TEST-NET-1 (RFC 5737) is never routed: either refused at once or silent until the timeout.
    t = RedisTransport("redis://192.0.2.1:6379/0", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectError):
        await t.connect()
    assert time.monotonic() - started < 1.5
    await t.aclose()


async def test_passwords_and_unix_socket() -> None:
    secret = "s3cr3t-" + uid()
    with throwaway_redis() as (port, sock):
        # Unix socket, db from ?virtual_host (Celery's redis+socket form).
        t = RedisTransport(f"redis+socket://{sock}?virtual_host=3")
        await t.connect()
        ex = Exchange(f"t.sock.{uid()}", ExchangeKind.FANOUT)
        async with t.subscribe(Binding(ex)) as sub:
            await t.publish(Message(b'"via socket"'), ex)
            assert (await receive(sub)).body == b'"via socket"'
        await t.aclose()

        admin = aioredis.Redis(host="127.0.0.1", port=port)
        await admin.config_set("requirepass", secret)
        await admin.aclose()

        wrong = RedisTransport(f"redis://:not-{secret}@127.0.0.1:{port}/0")
        with pytest.raises(AuthenticationError) as info:
            await wrong.connect()
        assert secret not in str(info.value) and "not-" not in str(info.value)
        assert "**" in str(info.value)  # the redacted URL names the server
        await wrong.aclose()

        anonymous = RedisTransport(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(AuthenticationError):
            await anonymous.connect()
        await anonymous.aclose()

        right = RedisTransport(f"redis://:{secret}@127.0.0.1:{port}/2")
        async with right:
            assert secret not in repr(right) and secret not in str(right.url)
            async with right.subscribe(reply_binding(str(uuid.uuid4()))) as sub:
                await right.publish(Message(b'"authed"'), REPLY, sub.binding.routing_key)
                assert (await receive(sub)).body == b'"authed"'


# --------------------------------------------------------------------------------------------
# TLS


def _make_certs(workdir: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, cert = (
        workdir / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt")
    )
    openssl = shutil.which("openssl")
    if openssl is None:  # scripts/test installs it; a missing tool must not hide a TLS test
        pytest.fail("openssl is not installed (apt-get install openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    ext = workdir / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


async def test_tls_with_broker_use_ssl_options() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca, cert, key = _make_certs(Path(tmp))
        tls_port = brokers.free_port()
        tls_args = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                    "--tls-auth-clients", "no")  # fmt: skip
        with throwaway_redis(*tls_args):
            url = f"rediss://127.0.0.1:{tls_port}/0"
            good = {"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": str(ca)}
            async with RedisTransport(url, ssl=good) as t:
                ex = Exchange(f"t.tls.{uid()}", ExchangeKind.FANOUT)
                async with t.subscribe(Binding(ex)) as sub:
                    await t.publish(Message(b'"tls"'), ex)
                    assert (await receive(sub)).body == b'"tls"'
            # The server certificate is not trusted without our CA: refuse to connect.
            untrusted = RedisTransport(url, ssl={"ssl_cert_reqs": "required"}, connect_timeout=3)
            with pytest.raises(ConnectError):
                await untrusted.connect()
            await untrusted.aclose()
