"""RabbitMQ-specific behaviour of the AMQP adapter, checked on the broker with rabbitmqctl."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aiocelerymon._url import parse_url
from aiocelerymon.exceptions import (
    AuthenticationError,
    BrokerRefusedError,
    ConnectError,
    ConnectionLostError,
    ResourceLockedError,
)
from aiocelerymon.transports import (
    Binding,
    Exchange,
    ExchangeKind,
    Message,
    RetryPolicy,
    SubscriptionBase,
    TransportState,
)
from aiocelerymon.transports.amqp import AmqpTransport
from aiocelerymon.wire import names
from tests.support.brokers import RabbitServer, free_port
from tests.support.contract import connected
from tests.support.proxy import Proxy

pytestmark = [pytest.mark.integration, pytest.mark.amqp]

DEADLINE = 10.0
MakeAmqp = Callable[..., Awaitable[AmqpTransport]]


def uid() -> str:
    return uuid.uuid4().hex[:12]


async def ctl(server: RabbitServer, *args: str) -> list[dict[str, Any]]:
    """``rabbitmqctl <args> --formatter json``, parsed; run off the loop (it takes ~1 s)."""
    out = await asyncio.to_thread(server.rabbitmqctl, *args, "--formatter", "json")
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


async def queues(server: RabbitServer, vhost: str = "/") -> dict[str, dict[str, Any]]:
    rows = await ctl(
        server, "list_queues", "-p", vhost,
        "name", "durable", "auto_delete", "exclusive", "arguments", "consumers", "messages",
    )  # fmt: skip
    return {row["name"]: row for row in rows}


async def exchanges(server: RabbitServer, vhost: str = "/") -> dict[str, dict[str, Any]]:
    rows = await ctl(
        server, "list_exchanges", "-p", vhost, "name", "type", "durable", "auto_delete"
    )
    return {row["name"]: row for row in rows}


async def consumer_queues(server: RabbitServer, vhost: str = "/") -> set[str]:
    return {row["queue_name"] for row in await ctl(server, "list_consumers", "-p", vhost)}


def arguments(row: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    # json rows carry [name, AMQP type, value]: the type shows an int is an int.
    return {name: (kind, value) for name, kind, value in row["arguments"]}


async def receive(sub: SubscriptionBase, timeout: float = DEADLINE) -> Any:
    async with asyncio.timeout(timeout):
        return await sub.receive()


async def until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll client-side state that has no event of its own, with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def make(rabbit_server: RabbitServer) -> AsyncIterator[MakeAmqp]:
    def build(url: str | None = None, **options: Any) -> AmqpTransport:
        return AmqpTransport(url or rabbit_server.url, **options)

    async with connected(build) as factory:
        yield factory


# -- exact entities ------------------------------------------------------------------------------


async def test_celery_entities_have_exact_flags(make: MakeAmqp, rabbit_server: RabbitServer):
    t = await make()
    oid = str(uuid.uuid4())
    reply = Binding(
        names.reply_exchange(),
        routing_key=oid,
        queue=f"{oid}.reply.celery.pidbox",
        exclusive=True,
        expires=10.0,
        message_ttl=300.0,
    )
    async with t.subscribe(reply) as sub:
        await t.publish(Message(b"{}", delivery_mode=2), names.pidbox_exchange())
        await t.publish(Message(b"[]", headers={"hostname": "x@y"}), names.event_exchange(), "a.b")
        ex = await exchanges(rabbit_server)
        q = (await queues(rabbit_server))[sub.queue]
    flags = ("type", "durable", "auto_delete")
    assert [ex["celeryev"][k] for k in flags] == ["topic", True, False]
    assert [ex["celery.pidbox"][k] for k in flags] == ["fanout", False, False]
    assert [ex["reply.celery.pidbox"][k] for k in flags] == ["direct", False, False]
    assert [q[k] for k in ("durable", "auto_delete", "exclusive", "consumers")] == [
        False, True, True, 1,
    ]  # fmt: skip
    args = arguments(q)
    assert args.keys() == {"x-expires", "x-message-ttl"}
    assert args["x-expires"][1] == 10000 and args["x-message-ttl"][1] == 300000
    # Integer AMQP types (pamqp picks the smallest); RabbitMQ compares them as one class.
    assert {kind for kind, _ in args.values()} <= {"byte", "short", "signedint", "long"}


async def test_properties_are_exactly_kombus(make: MakeAmqp, rabbit_server: RabbitServer):
    """What py-amqp (kombu's transport, so a Celery worker) reads from our publish."""
    import amqp  # py-amqp, kombu's AMQP client: what a Celery worker reads with

    t = await make()
    ex = Exchange(f"t.props.{uid()}", ExchangeKind.DIRECT)
    binding = Binding(ex, "k", queue=f"t.props.{uid()}", exclusive=False, auto_delete=False)
    async with t.subscribe(binding):
        pass  # declared and bound; kept (not auto-delete) so the message waits for py-amqp
    headers = {"clock": 300, "expires": 1767225601.5, "ticket": "t", "hostname": "h\u00e9"}
    await t.publish(Message(b'{"m": 1}', headers=headers, delivery_mode=2, priority=0), ex, "k")

    url = parse_url(rabbit_server.url)

    def fetch() -> Any:
        with amqp.Connection(f"{url.hostname}:{url.port}", userid="guest", password="guest") as c:
            channel = c.channel()
            try:
                return channel.basic_get(binding.queue, no_ack=True)
            finally:
                channel.queue_delete(binding.queue)

    got = await asyncio.to_thread(fetch)
    assert got is not None
    assert got.body == '{"m": 1}'  # py-amqp decodes a utf-8 body to str
    assert got.properties == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "application_headers": headers,
        "delivery_mode": 2,
        "priority": 0,
    }  # nothing more: no message_id stamp, floats stay doubles
    assert list(got.properties["application_headers"]) == list(headers)


# -- refusals ------------------------------------------------------------------------------------


async def test_wrong_exchange_flags_are_refused_and_nothing_breaks(
    make: MakeAmqp, rabbit_server: RabbitServer
):
    t = await make()
    good = Exchange(f"t.ev.{uid()}", ExchangeKind.TOPIC, durable=True)
    bad = Exchange(good.name, ExchangeKind.TOPIC, durable=False)
    async with t.subscribe(Binding(good, "#")) as live:
        with pytest.raises(BrokerRefusedError, match="inequivalent arg 'durable'") as info:
            await t.publish(Message(b"x"), bad, "a")
        assert info.value.__cause__ is not None
        assert good.name in str(info.value)
        with pytest.raises(BrokerRefusedError, match="PRECONDITION_FAILED"):
            async with t.subscribe(Binding(bad, "#")):
                pass
        # Neither refusal broke the publisher, the live subscription or the connection.
        await t.publish(Message(b"still"), good, "a.b")
        assert (await receive(live)).body == b"still"
        assert t.state is TransportState.CONNECTED
    assert (await exchanges(rabbit_server))[good.name]["durable"] is True


async def test_queue_argument_mismatch_is_refused_without_deleting_it(
    make: MakeAmqp, rabbit_server: RabbitServer
):
    t1, t2 = await make(), await make()
    ex = Exchange(f"t.args.{uid()}", ExchangeKind.DIRECT)
    name = f"t.args.{uid()}"
    five = Binding(ex, "k", queue=name, exclusive=False, message_ttl=5.0)
    six = Binding(ex, "k", queue=name, exclusive=False, message_ttl=6.0)
    async with t1.subscribe(five) as first:
        with pytest.raises(BrokerRefusedError, match="x-message-ttl"):
            async with t2.subscribe(six):
                pass
        row = (await queues(rabbit_server))[name]
        assert (row["consumers"], arguments(row)["x-message-ttl"][1]) == (1, 5000)
        await t2.publish(Message(b"ok"), ex, "k")
        assert (await receive(first)).body == b"ok"


async def test_exclusive_queue_of_another_connection_is_locked(
    make: MakeAmqp, rabbit_server: RabbitServer
):
    owner, other = await make(), await make()
    ex = Exchange(f"t.lock.{uid()}", ExchangeKind.DIRECT)
    binding = Binding(ex, "k", queue=f"t.lock.{uid()}", exclusive=True, expires=10.0)
    async with owner.subscribe(binding) as sub:
        with pytest.raises(ResourceLockedError, match="RESOURCE_LOCKED"):
            async with other.subscribe(binding):
                pass
        # The failed attempt's cleanup must not have deleted or detached the owner's queue.
        assert (await queues(rabbit_server))[binding.queue]["consumers"] == 1
        await other.publish(Message(b"mine"), ex, "k")
        assert (await receive(sub)).body == b"mine"
        assert other.state is TransportState.CONNECTED


# -- lifecycle -----------------------------------------------------------------------------------


async def test_vhost_url(make: MakeAmqp, rabbit_server: RabbitServer):
    url = await asyncio.to_thread(rabbit_server.add_vhost, "aiocm-test")
    t = await make(url)
    assert t.url.virtual_host == "aiocm-test"
    ex = names.event_exchange()
    async with t.subscribe(Binding(ex, "#", expires=60.0, message_ttl=5.0)) as sub:
        await t.publish(Message(b"[]"), ex, "task.multi")
        assert (await receive(sub)).routing_key == "task.multi"
        assert sub.queue in await queues(rabbit_server, "aiocm-test")
        assert sub.queue not in await queues(rabbit_server, "/")


async def test_cleanup_leaves_no_queue_and_no_consumer(
    make: MakeAmqp, rabbit_server: RabbitServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="aiocelerymon")
    t = await make()
    ex = Exchange(f"t.clean.{uid()}", ExchangeKind.FANOUT)
    exclusive = Binding(ex, queue=f"t.clean.x.{uid()}", expires=10.0, message_ttl=300.0)
    shared = Binding(ex, queue=f"t.clean.s.{uid()}", exclusive=False)
    durable = Binding(
        ex, queue=f"t.clean.d.{uid()}", exclusive=False, durable=True, auto_delete=False
    )
    ours = {exclusive.queue, shared.queue, durable.queue}

    one = await t.subscribe(Binding(ex, queue=f"t.clean.1.{uid()}")).start()
    await one.aclose()  # a single unsubscribe deletes its queue before returning
    assert one.queue not in await queues(rabbit_server)

    for b in (exclusive, shared, durable):
        await t.subscribe(b).start()
    assert ours <= (await queues(rabbit_server)).keys()
    assert ours <= await consumer_queues(rabbit_server)
    await t.aclose()
    # Neither closing a subscription (its channel) nor the transport is an outage: no
    # "connection lost", no reconnect.
    assert not [r for r in caplog.records if r.name.startswith("aiocelerymon")]
    assert t.state is TransportState.CLOSED

    left = await queues(rabbit_server)
    assert not (ours - {durable.queue}) & left.keys()
    assert not ours & await consumer_queues(rabbit_server)
    # A durable, non-auto-delete named queue is a pipeline's: it outlives us, unconsumed.
    assert left[durable.queue]["consumers"] == 0
    await asyncio.to_thread(rabbit_server.rabbitmqctl, "delete_queue", durable.queue)


async def test_default_exchange_reply_path(make: MakeAmqp):
    """The §2.4 alternative: replies to exchange '' with the queue name as routing key."""
    t = await make()
    name = f"t.direct-reply.{uid()}"
    async with t.subscribe(Binding(Exchange("", ExchangeKind.DIRECT), name, queue=name)) as sub:
        await t.publish(Message(b"r"), Exchange("", ExchangeKind.DIRECT), name)
        d = await receive(sub)
    assert (d.body, d.exchange, d.routing_key) == (b"r", "", name)


async def test_heartbeat_option_is_negotiated(make: MakeAmqp, rabbit_server: RabbitServer):
    t = await make(transport_options={"heartbeat": 7, "connection_name": f"hb-{uid()}"})
    rows = await ctl(rabbit_server, "list_connections", "timeout", "client_properties")
    mine = [
        r
        for r in rows
        if ["connection_name", "longstr", t.connection_name] in r["client_properties"]
    ]
    assert [r["timeout"] for r in mine] == [7]


async def test_confirmed_publish_to_a_vanished_exchange_is_refused(make: MakeAmqp):
    t = await make(transport_options={"confirm_publish": True})
    ex = Exchange(f"t.gone.{uid()}", ExchangeKind.FANOUT, auto_delete=True)
    async with t.subscribe(Binding(ex)) as sub:
        await t.publish(Message(b"1"), ex)
        assert (await receive(sub)).body == b"1"
    # The last binding went with the queue, and the auto-delete exchange with it; the
    # transport still believes it declared it on this connection.
    with pytest.raises(BrokerRefusedError, match="NOT_FOUND"):
        await t.publish(Message(b"2"), ex)
    async with t.subscribe(Binding(ex)) as again:  # redeclared: the cache was dropped
        await t.publish(Message(b"3"), ex)
        assert (await receive(again)).body == b"3"


# -- connection failures -------------------------------------------------------------------------


async def test_closed_port_is_a_connect_error_within_the_timeout():
    t = AmqpTransport(f"amqp://guest:guest@127.0.0.1:{free_port()}//", connect_timeout=2.0)
    start = time.monotonic()
    with pytest.raises(ConnectError, match="cannot connect") as info:
        await t.connect()
    assert time.monotonic() - start < 2.0
    assert not isinstance(info.value, AuthenticationError)
    assert t.state is TransportState.IDLE
    await t.aclose()


async def test_silent_server_times_out_as_connect_error():
    writers: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accept TCP, never speak AMQP

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t = AmqpTransport(f"amqp://127.0.0.1:{port}//", connect_timeout=0.5)
        start = time.monotonic()
        with pytest.raises(ConnectError, match=r"within 0\.5s"):
            await t.connect()
        assert 0.4 < time.monotonic() - start < 3.0
    finally:
        for writer in writers:
            writer.transport.abort()
        server.close()


async def test_bad_password_is_an_authentication_error(rabbit_server: RabbitServer):
    secret = f"not-the-password-{uid()}"
    url = parse_url(rabbit_server.url)
    t = AmqpTransport(f"amqp://guest:{secret}@{url.hostname}:{url.port}//")
    with pytest.raises(AuthenticationError, match="ACCESS_REFUSED") as info:
        await t.connect()
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in chain:
        assert secret not in str(e) and secret not in repr(e)
    assert "guest" in str(info.value)


async def test_network_cut_reconnects_and_publish_waits_then_fails(
    make: MakeAmqp, rabbit_server: RabbitServer
):
    port = parse_url(rabbit_server.url).port
    assert port is not None
    async with Proxy(port) as proxy:
        t = await make(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
            connect_timeout=1.0,
            retry=RetryPolicy(initial=0.05, maximum=0.1),
        )
        ex = Exchange(f"t.cut.{uid()}", ExchangeKind.FANOUT)
        async with t.subscribe(Binding(ex)) as sub:
            proxy.refusing = True
            proxy.cut()  # no AMQP Close frame: only the socket dies
            await until(lambda: t.state is TransportState.RECONNECTING, "the drop to be seen")
            start = time.monotonic()
            with pytest.raises(ConnectionLostError):
                await t.publish(Message(b"lost"), ex)
            assert 0.9 < time.monotonic() - start < 3.0  # waited connect_timeout, no more

            proxy.refusing = False
            await until(lambda: t.state is TransportState.CONNECTED, "the reconnect")
            await t.publish(Message(b"back"), ex)
            d = await receive(sub)
            assert (d.body, d.generation, sub.generation) == (b"back", 1, 1)


async def test_subscription_closed_during_the_restore_leaves_nothing_behind(
    make: MakeAmqp, rabbit_server: RabbitServer
):
    # Issue 19 #10: a subscription whose owner left while its restore was running stayed
    # consuming (its exclusive queue alive) until the next reconnect.
    port = parse_url(rabbit_server.url).port
    assert port is not None
    async with Proxy(port) as proxy:
        t = await make(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
            connect_timeout=10.0,
            retry=RetryPolicy(initial=0.05, maximum=0.1),
        )
        ex = Exchange(f"t.orphan.{uid()}", ExchangeKind.FANOUT)
        sub = t.subscribe(Binding(ex))
        async with sub:
            proxy.delay = 0.2  # every RPC of the restore takes >= 0.2 s: a window to leave in
            proxy.cut()
            await until(lambda: sub.generation == 1, "the restore to begin")
            assert t.state is TransportState.RECONNECTING
        await until(lambda: t.state is TransportState.CONNECTED, "the restore to finish")
        proxy.delay = 0.0
        assert sub.queue not in await queues(rabbit_server)


async def test_broker_cancelling_the_consumer_restores_the_subscription(
    make: MakeAmqp, rabbit_server: RabbitServer
):
    t = await make()
    ex = Exchange(f"t.cancelled.{uid()}", ExchangeKind.FANOUT)
    async with t.subscribe(Binding(ex)) as sub:
        await asyncio.to_thread(rabbit_server.rabbitmqctl, "delete_queue", sub.queue)
        await until(lambda: sub.generation >= 1, "the subscription to be restored")
        await until(lambda: t.state is TransportState.CONNECTED, "the reconnect")
        await t.publish(Message(b"again"), ex)
        d = await receive(sub)
        assert (d.body, d.generation) == (b"again", 1)
        assert sub.queue in await queues(rabbit_server)


# -- TLS (through a TLS-terminating proxy in front of the plain broker) --------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("amqp-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=broker.test", "-addext", "subjectAltName=DNS:broker.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_options_reach_the_handshake(
    make: MakeAmqp, rabbit_server: RabbitServer, tls_files: tuple[Path, Path]
):
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    port = parse_url(rabbit_server.url).port
    assert port is not None
    async with Proxy(port, tls=server_ctx) as proxy:
        url = f"amqps://guest:guest@127.0.0.1:{proxy.port}//"
        # The certificate names broker.test, not 127.0.0.1: server_hostname makes it verify.
        t = await make(url, ssl={"ca_certs": str(cert), "server_hostname": "broker.test"})
        ex = Exchange(f"t.tls.{uid()}", ExchangeKind.FANOUT)
        async with t.subscribe(Binding(ex)) as sub:
            await t.publish(Message(b"secure"), ex)
            assert (await receive(sub)).body == b"secure"
        with pytest.raises(ConnectError, match=r"(?i)certificate"):
            await make(url, ssl={"ca_certs": str(cert)}, connect_timeout=2.0)
        unverified = await make(url, ssl={"cert_reqs": "CERT_NONE"})
        assert unverified.state is TransportState.CONNECTED


async def test_missing_vhost_reports_the_brokers_words(rabbit_server: RabbitServer):
    """RabbitMQ answers Connection.Open with Connection.Close 530 NOT_ALLOWED; the error says
    that, not aiormq's "Expected one of ['Connection.OpenOk'], got <Connection.Close ...>"."""
    url = parse_url(rabbit_server.url)
    vhost = f"nosuchvhost-{uid()}"
    t = AmqpTransport(f"amqp://guest:guest@{url.hostname}:{url.port}/{vhost}")
    with pytest.raises(ConnectError) as info:
        await t.connect()
    message = str(info.value)
    assert f"NOT_ALLOWED - vhost {vhost} not found" in message, message
    assert "Expected one of" not in message and "OpenOk" not in message
    assert not isinstance(info.value, AuthenticationError)
