"""Proof of wire-exactness: real, unmodified Celery workers answer us and we hear their events.

Runs against whatever Celery the environment has (nox runs it once per supported minor), on
RabbitMQ (default vhost, and a vhost with a custom control exchange) and Redis (db 0, and db 3
with a ``global_keyprefix``). Only aiocelerymon's transports and wire helpers are used on our
side; Celery is used only to run the worker and to send the task that produces events.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon.transports import Delivery, Transport, TransportBase, create_transport
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.event import decode_events
from aiocelerymon.wire.pidbox import ReplyTo, request_body, request_message
from tests.support.celery_worker import CeleryWorker
from tests.support.interop import VARIANTS, SharedClusters, Variant

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DEADLINE = 30.0


@dataclass
class Cluster:
    variant: Variant
    url: str
    worker: CeleryWorker  # the one addressed; ``nodes`` are every worker of the cluster
    nodes: list[str]

    def transport(self) -> TransportBase:
        return create_transport(self.url, transport_options=self.variant.transport_options)


@pytest.fixture(scope="module", params=VARIANTS)
def cluster(request: pytest.FixtureRequest, shared_clusters: SharedClusters) -> Cluster:
    variant: Variant = request.param
    url, started = shared_clusters.get(variant)
    return Cluster(variant, url, started[0], [w.hostname for w in started])


@pytest.fixture
async def transport(cluster: Cluster) -> AsyncIterator[TransportBase]:
    async with cluster.transport() as t:
        yield t


def decode(delivery: Delivery) -> Any:
    return codec.decode(delivery.body, delivery.content_type, delivery.content_encoding)


@contextlib.asynccontextmanager
async def reply_queue(transport: Transport, namespace: str) -> AsyncIterator[tuple[str, Any]]:
    oid = str(uuid.uuid4())
    async with transport.subscribe(names.reply_binding(oid, namespace)) as sub:
        yield oid, sub


async def send(
    transport: Transport,
    namespace: str,
    oid: str,
    method: str,
    *,
    destination: list[str] | None = None,
) -> str:
    ticket = str(uuid.uuid4())
    reply_to = ReplyTo(exchange=names.reply_exchange(namespace).name, routing_key=oid)
    body = request_body(method, destination=destination, ticket=ticket, reply_to=reply_to)
    message = request_message(body, clock=1, timeout=5.0)
    await transport.publish(message, names.pidbox_exchange(namespace))
    return ticket


async def wait_until_listening(transport: Transport, cluster: Cluster) -> None:
    """'ready.' is logged before the pidbox consumer is certain to be up: ping until it answers."""
    ns = cluster.variant.namespace
    async with asyncio.timeout(DEADLINE), reply_queue(transport, ns) as (oid, sub):
        while True:
            ticket = await send(transport, ns, oid, "ping")
            try:
                async with asyncio.timeout(1.0):
                    while (await sub.receive()).headers.get("ticket") != ticket:
                        pass
                return
            except TimeoutError:
                continue


async def test_real_worker_answers_our_ping(transport: TransportBase, cluster: Cluster) -> None:
    await wait_until_listening(transport, cluster)
    ns, hostname = cluster.variant.namespace, cluster.worker.hostname
    async with reply_queue(transport, ns) as (oid, sub):
        # A request for another node comes first; the worker handles requests in order, so
        # when the ping's reply arrives any reply to the first would already be here.
        other = await send(transport, ns, oid, "ping", destination=["nobody@nowhere"])
        ticket = await send(transport, ns, oid, "ping", destination=[hostname])
        async with asyncio.timeout(DEADLINE):
            reply = await sub.receive()
    assert reply.headers["ticket"] == ticket != other
    assert isinstance(reply.headers["clock"], int)
    assert decode(reply) == {hostname: {"ok": "pong"}}
    assert (reply.content_type, reply.content_encoding) == ("application/json", "utf-8")
    assert reply.delivery_mode == 1  # replies are transient
    assert (reply.exchange, reply.routing_key) == (names.reply_exchange(ns).name, oid)
    assert sub.closed


async def test_real_worker_survives_and_answers_a_broadcast(
    transport: TransportBase, cluster: Cluster
) -> None:
    # On Redis an envelope without properties.delivery_tag kills Celery <= 5.6 workers; answering
    # two broadcasts in a row proves ours are accepted.
    await wait_until_listening(transport, cluster)
    ns = cluster.variant.namespace
    for _ in range(2):
        async with reply_queue(transport, ns) as (oid, sub):
            ticket = await send(transport, ns, oid, "ping")
            async with asyncio.timeout(DEADLINE):
                reply = await sub.receive()
            assert reply.headers["ticket"] == ticket
            (answered,) = decode(reply)
            assert answered in cluster.nodes
    assert cluster.worker.process.poll() is None


async def test_we_hear_heartbeats_and_task_multi_batches(
    transport: TransportBase, cluster: Cluster
) -> None:
    await wait_until_listening(transport, cluster)
    ns = cluster.variant.namespace
    async with transport.subscribe(names.event_binding(uuid.uuid4().hex)) as events:
        # Cast `heartbeat` (no reply wanted) as Celery's event receiver does on start.
        cast = request_message(request_body("heartbeat"), clock=1, timeout=None)
        await transport.publish(cast, names.pidbox_exchange(ns))
        task_id = await asyncio.to_thread(_send_add_task, cluster)
        seen: dict[str, dict[str, Any]] = {}
        batches: list[Delivery] = []
        async with asyncio.timeout(DEADLINE):
            while "worker-heartbeat" not in seen or "task-succeeded" not in seen:
                delivery = await events.receive()
                if delivery.routing_key == names.TASK_MULTI:
                    batches.append(delivery)
                for ev in decode_events(decode(delivery)):
                    # The task runs on whichever worker of the cluster takes it.
                    if ev.get("hostname") in cluster.nodes and ev.get("uuid", task_id) == task_id:
                        seen.setdefault(ev["type"], ev)
                        assert delivery.headers["hostname"] == ev["hostname"]
    assert batches, "task events arrive batched under routing key task.multi"
    assert isinstance(decode(batches[0]), list)
    assert {"task-received", "task-started", "task-succeeded"} <= set(seen)
    ok = seen["task-succeeded"]
    assert (ok["result"], ok["uuid"]) == ("4", task_id)
    assert isinstance(ok["runtime"], float)
    assert isinstance(ok["clock"], int)
    hb = seen["worker-heartbeat"]
    assert hb["sw_ident"] == "py-celery"
    assert hb["sw_ver"] == cluster.worker.version


def _send_add_task(cluster: Cluster) -> str:
    # Celery's own client sends the task; only the worker's events are under test.
    from celery import Celery

    app = Celery("sender", broker=cluster.url)
    if cluster.variant.transport_options:
        app.conf.broker_transport_options = cluster.variant.transport_options
    try:
        return app.send_task("tests.integration.celery_app.add", (2, 2)).id
    finally:
        app.close()
