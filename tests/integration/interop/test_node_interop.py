"""Real Celery tools cannot tell our Node from a worker: the CLI pings, lists and inspects it.

Runs the celery CLI of whatever Celery the environment has (nox runs it once per supported minor)
as subprocesses while our Node serves in this event loop, on the four broker variants of
tests/support/interop.py, next to a real worker in the same cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aiocelerymon import Client
from aiocelerymon.control.node import Node
from aiocelerymon.testing import wait_for_workers
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.pidbox import ReplyTo, request_body, request_message
from tests.support.celery_worker import (
    APP_MODULE,
    REPO_ROOT,
    CeleryWorker,
    celery_env,
    celery_worker,
)
from tests.support.interop import VARIANTS, Variant, variant_url

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DEADLINE = 60.0
TASKS = {"svc.export": {"rate_limit": "10/m"}, "svc.import": {}}


@dataclass
class Cluster:
    variant: Variant
    url: str

    @property
    def nodename(self) -> str:
        return f"svc.{self.variant.id}@interop"

    def config(self) -> dict[str, Any]:
        """Celery settings for the CLI and the worker."""
        return self.variant.config(broker_url=self.url)

    def client(self) -> Client:
        return self.variant.client(self.url)


@pytest.fixture(scope="module", params=VARIANTS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    variant: Variant = request.param
    with variant_url(request, variant) as url:
        yield Cluster(variant, url)


@pytest.fixture(scope="module")
def worker(cluster: Cluster) -> Iterator[CeleryWorker]:
    """One real worker per variant, started only for the tests that ask for it."""
    hostname = f"w1.{cluster.variant.id}@interop"
    with celery_worker(cluster.url, hostname, config=cluster.config(), events=False) as w:
        yield w


@pytest.fixture
async def node(cluster: Cluster) -> AsyncIterator[Node]:
    stats = {"total": {"svc.export": 2}}
    async with cluster.client() as client:
        node = Node(client, cluster.nodename, registered=TASKS, stats=stats)
        async with node:
            yield node


async def celery(cluster: Cluster, *args: str) -> tuple[int, str]:
    """Run ``celery -A <test app> *args`` without blocking the loop; (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "celery", "-A", APP_MODULE, *args,
        cwd=REPO_ROOT,
        env=celery_env(cluster.config()),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(DEADLINE):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_cli_inspect_ping_finds_our_node(cluster: Cluster, node: Node) -> None:
    code, out = await celery(cluster, "inspect", "ping", "-d", node.nodename, "-t", "5")
    assert code == 0, out
    assert f"->  {node.nodename}: OK" in out
    assert "pong" in out
    assert "1 node online." in out


async def test_cli_status_lists_our_node(cluster: Cluster, node: Node) -> None:
    code, out = await celery(cluster, "status", "-t", "2")
    assert code == 0, out
    assert f"->  {node.nodename}: OK" in out
    assert "online." in out


async def test_cli_inspect_stats_json_is_our_stats(cluster: Cluster, node: Node) -> None:
    code, out = await celery(cluster, "inspect", "stats", "--json", "-d", node.nodename, "-t", "5")
    assert code == 0, out
    replies, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])
    stats = replies[node.nodename]
    assert stats["pid"] == os.getpid()
    assert isinstance(stats["clock"], str)
    assert isinstance(stats["uptime"], int)
    assert stats["total"] == {"svc.export": 2}
    assert stats["prefetch_count"] == 4  # Celery's default multiplier x pool_size 1
    broker = stats["broker"]
    assert "password" not in broker
    assert broker["transport"] == cluster.variant.broker
    assert broker["hostname"] in {"localhost", "127.0.0.1"}


async def test_cli_inspect_registered_and_unknown_command(cluster: Cluster, node: Node) -> None:
    code, out = await celery(cluster, "inspect", "registered", "-d", node.nodename, "-t", "5")
    assert code == 0, out
    assert "* svc.export [rate_limit=10/m]" in out
    assert "* svc.import" in out
    # A worker command we do not implement: an error reply still counts as an answer.
    code, out = await celery(cluster, "inspect", "memsample", "-d", node.nodename, "-t", "5")
    assert code == 0, out
    assert f"->  {node.nodename}: ERROR" in out
    assert "KeyError('memsample')" in out


async def test_cli_status_sees_a_real_worker_and_our_node(
    cluster: Cluster, worker: CeleryWorker, node: Node
) -> None:
    async with cluster.client() as client:
        await wait_for_workers(client, [worker.hostname], timeout=DEADLINE)
    code, out = await celery(cluster, "status", "-t", "2")
    assert code == 0, out
    assert f"->  {node.nodename}: OK" in out
    assert f"->  {worker.hostname}: OK" in out
    assert "2 nodes online." in out


async def test_our_node_honours_the_default_exchange_shortcut(cluster: Cluster, node: Node) -> None:
    # reply_to.exchange == "": the reply goes through the default exchange straight to the queue
    # named by the routing key, as kombu workers do (wire reference §2.4); AMQP and Redis only.
    ns = cluster.variant.namespace
    async with cluster.client() as client:
        transport = client.transport
        oid = str(uuid.uuid4())
        async with transport.subscribe(names.reply_binding(oid, ns)) as sub:
            ticket = str(uuid.uuid4())
            reply_to = ReplyTo(exchange="", routing_key=sub.queue)
            body = request_body(
                "ping", destination=[node.nodename], ticket=ticket, reply_to=reply_to
            )
            await transport.publish(
                request_message(body, clock=1, timeout=5.0), names.pidbox_exchange(ns)
            )
            async with asyncio.timeout(DEADLINE):
                reply = await sub.receive()
    assert reply.headers["ticket"] == ticket
    decoded = codec.decode(reply.body, reply.content_type, reply.content_encoding)
    assert decoded == {node.nodename: {"ok": "pong"}}
