"""``queues`` and ``purge`` on real RabbitMQ and Redis, with task messages sent by Celery itself.

Celery's own client (``app.send_task``) fills the queues and a kombu consumer holds one message
unacknowledged; the broker is then checked with rabbitmqctl or a raw Redis client: the counts
are right, the unacknowledged message survives, and pidbox/event queues and Redis's
``unacked*`` keys are never touched.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis as sync_redis
from celery import Celery

import aiocelerymon
from aiocelerymon import cli
from aiocelerymon.demo import DemoWorker
from aiocelerymon.exceptions import NotAQueueError
from aiocelerymon.transports import Binding, Exchange, ExchangeKind, Message
from tests.support.brokers import RabbitServer, RedisServer

pytestmark = pytest.mark.integration


@dataclass
class Case:
    kind: str
    url: str
    rabbit: RabbitServer | None = None

    def ready_and_unacked(self, queue: str) -> tuple[int, int]:
        """Broker-side truth: messages ready and held unacknowledged, not through our code."""
        if self.rabbit is not None:
            vhost = self.url.rsplit("/", 1)[1]
            listing = self.rabbit.rabbitmqctl(
                "list_queues", "-p", vhost, "--quiet", "--no-table-headers",
                "name", "messages_ready", "messages_unacknowledged",
            )  # fmt: skip
            for line in listing.splitlines():
                name, ready, unacked = line.split("\t")
                if name == queue:
                    return int(ready), int(unacked)
            raise AssertionError(f"{queue} not on the broker: {listing}")
        raw = sync_redis.Redis.from_url(self.url)
        try:
            ready = sum(
                raw.llen(key) for key in (queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9)))
            )
            return ready, raw.hlen("unacked")
        finally:
            raw.close()


@pytest.fixture(params=["amqp", "redis"])
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    if request.param == "amqp":
        rabbit: RabbitServer = request.getfixturevalue("rabbit_server")
        vhost = f"qp-{uuid.uuid4().hex[:8]}"
        yield Case("amqp", rabbit.add_vhost(vhost), rabbit)
        rabbit.rabbitmqctl("delete_vhost", vhost)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url_for(9)  # a db of our own: the unacked keys are per db
        raw = sync_redis.Redis.from_url(url)
        raw.flushdb()
        yield Case("redis", url)
        raw.flushdb()
        raw.close()


def celery_app(url: str) -> Celery:
    app = Celery("qp", broker=url)
    app.conf.broker_connection_retry_on_startup = True
    return app


def send_tasks(app: Celery, queue: str, count: int) -> None:
    """What a producer does: Celery's task messages, with priorities spread over 0..9."""
    for n in range(count):
        app.send_task("proj.add", args=(n, n), queue=queue, priority=(n * 3) % 10)


def hold_one_unacked(app: Celery, queue: str) -> Any:
    """A consumer that received one message and has not acknowledged it (a busy worker)."""
    conn = app.connection_for_read()
    channel = conn.default_channel
    message = channel.basic_get(queue, no_ack=False)
    assert message is not None
    return conn


@dataclass
class Run:
    code: int
    out: str
    err: str


async def run_cli(*argv: str, stdin: str = "") -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.wait_for(
        cli.run(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin)), 60
    )
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
async def client(case: Case) -> AsyncIterator[aiocelerymon.Client]:
    async with aiocelerymon.Client(case.url) as c:
        yield c


async def test_depth_and_purge_of_celery_task_messages(
    case: Case, client: aiocelerymon.Client
) -> None:
    queue = f"tasks-{uuid.uuid4().hex[:6]}"
    app = celery_app(case.url)
    send_tasks(app, queue, 7)
    assert case.ready_and_unacked(queue) == (7, 0)

    shown = await run_cli("-b", case.url, "queues", "-Q", f"{queue},nosuch-{queue}", "--json")
    assert shown.code == 0, shown.err
    depth, missing = json.loads(shown.out)
    assert (depth["name"], depth["exists"], depth["messages"]) == (queue, True, 7)
    # RabbitMQ counts consumers; Redis cannot see them.
    assert depth["consumers"] == (0 if case.kind == "amqp" else None)
    if case.kind == "amqp":
        assert missing == {"name": f"nosuch-{queue}", "exists": False, "messages": None,
                           "consumers": None}  # fmt: skip
    # (On Redis an empty, unbound queue name is indistinguishable from a missing one.)
    assert missing["exists"] is False

    conn = hold_one_unacked(app, queue)
    try:
        assert case.ready_and_unacked(queue) == (6, 1)
        purged = await run_cli("-b", case.url, "purge", "-f", "-Q", queue)
        assert purged.code == 0, purged.err
        assert purged.out.splitlines() == [
            f"{queue}: 6 messages purged",
            "Purged 6 messages from 1 known task queue.",
        ]
        # The message a consumer holds is not a waiting one: still there, still unacked.
        assert case.ready_and_unacked(queue) == (0, 1)
    finally:
        conn.release()
    # The held message went back to the queue with its consumer (RabbitMQ requeues it, kombu's
    # Redis channel restores it), and the queue still routes after the purge.
    send_tasks(app, queue, 2)
    again = await run_cli("-b", case.url, "queues", "-Q", queue)
    assert again.out.splitlines()[1].split()[:2] == [queue, "3"]


async def test_purge_discovers_worker_queues_and_leaves_control_and_events_alone(
    case: Case, client: aiocelerymon.Client
) -> None:
    queue = f"work-{uuid.uuid4().hex[:6]}"
    app = celery_app(case.url)
    send_tasks(app, queue, 3)
    # A kept queue named like a node's pidbox queue and one like an event queue, each with a
    # waiting message: purge must refuse them by name.
    kept = {}
    for name in (f"n{queue}@h.celery.pidbox", f"celeryev.{queue}"):
        ex = Exchange(f"ex-{name}", ExchangeKind.DIRECT, durable=True)
        binding = Binding(ex, "k", queue=name, exclusive=False, durable=True, auto_delete=False)
        async with client.transport.subscribe(binding):
            pass
        await client.transport.publish(Message(b"{}"), ex, "k")
        kept[name] = 1
    if case.kind == "redis":
        raw = sync_redis.Redis.from_url(case.url)
        raw.hset("unacked", "tag-1", b'[{}, "celery", "celery"]')
        raw.zadd("unacked_index", {"tag-1": 1.0})
        before = (raw.hgetall("unacked"), raw.zrange("unacked_index", 0, -1))

    worker = DemoWorker(client, f"w-{queue}@test", queue=queue)
    await worker.node.start()
    try:
        for name in kept:
            refused = await run_cli("-b", case.url, "purge", "-f", "-Q", f"{queue},{name}")
            assert refused.code == cli.EX_USAGE
            assert refused.err.startswith(f"Error: Refusing to purge {name!r}: ")
        assert case.ready_and_unacked(queue)[0] == 3

        shown = await run_cli("-b", case.url, "queues", "-t", "1")
        assert shown.out.splitlines()[1].split()[:2] == [queue, "3"]
        asked = await run_cli("-b", case.url, "purge", "-t", "1", stdin="y\n")
        assert asked.code == 0, asked.err
        assert "This will remove all tasks from queue: " + queue + "." in asked.out
        assert asked.out.splitlines()[-2:] == [
            f"{queue}: 3 messages purged",
            "Purged 3 messages from 1 known task queue.",
        ]
    finally:
        await worker.node.aclose()
    assert case.ready_and_unacked(queue)[0] == 0
    for name, count in kept.items():
        depth = await client.transport.queue_depth(name)
        assert depth is not None and depth.messages == count
    if case.kind == "redis":
        assert (raw.hgetall("unacked"), raw.zrange("unacked_index", 0, -1)) == before
        raw.close()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("_kombu.binding.celery", "it is kombu's bookkeeping, not a queue"),
        ("celeryev.anything", "it is an event queue"),
        ("unacked_index", "it holds kombu's unacknowledged messages"),
        ("unacked-elsewhere", "it holds kombu's unacknowledged messages"),
    ],
)
async def test_purge_refuses_kombus_event_and_unacked_names(
    case: Case, client: aiocelerymon.Client, name: str, why: str
) -> None:
    queue = f"keep-{uuid.uuid4().hex[:6]}"
    send_tasks(celery_app(case.url), queue, 2)
    refused = await run_cli("-b", case.url, "purge", "-f", "-Q", f"{queue},{name}")
    assert refused.code == cli.EX_USAGE
    assert refused.err.startswith(f"Error: Refusing to purge {name!r}: {why}")
    assert case.ready_and_unacked(queue) == (2, 0)  # refused before anything was deleted


# Only Redis keeps other kinds of keys beside its queues: run on it alone (never a skip).
@pytest.mark.parametrize("case", ["redis"], indirect=True)
async def test_redis_purge_never_deletes_a_key_that_is_not_a_list(case: Case) -> None:
    """kombu's binding set, a string, a hash, a zset under a queue's name (or under one of
    its priority lists' names): refused, nothing deleted, and `queues` says what it is."""
    queue = f"tasks-{uuid.uuid4().hex[:6]}"
    app = celery_app(case.url)
    send_tasks(app, queue, 4)  # priorities 0, 3, 6, 9: the base list and its step lists
    raw = sync_redis.Redis.from_url(case.url)
    try:
        bindings = f"_kombu.binding.{queue}"
        binding = raw.smembers(bindings)
        assert binding  # Celery declared the queue: kombu's binding set names it
        others = {f"set-{queue}": "set", f"str-{queue}": "string", f"hash-{queue}": "hash",
                  f"zset-{queue}": "zset"}  # fmt: skip
        raw.sadd(f"set-{queue}", "a")
        raw.set(f"str-{queue}", "a")
        raw.hset(f"hash-{queue}", "a", "b")
        raw.zadd(f"zset-{queue}", {"a": 1.0})
        # A queue whose priority-3 list name holds a string: the queue is not purgeable as a
        # whole, and its other lists must survive too.
        odd = f"odd-{queue}"
        send_tasks(app, odd, 1)
        raw.set(f"{odd}\x06\x163", "not a list")
        snapshot = {key: raw.dump(key) for key in raw.keys("*")}

        for name, kind in {**others, odd: "string"}.items():
            refused = await run_cli("-b", case.url, "purge", "-f", "-Q", f"{queue},{name}")
            assert refused.code == cli.EX_USAGE, refused
            assert refused.err == (
                f"Error: Refusing to purge {name!r}: it is a Redis {kind}, not a queue.\n"
            )
            assert refused.out == ""
        assert {key: raw.dump(key) for key in raw.keys("*")} == snapshot

        others[bindings] = "set"  # refused by name by purge, shown by queues
        shown = await run_cli("-b", case.url, "queues", "-Q", ",".join([queue, *others]))
        assert shown.code == 0, shown.err
        rows = [line.split(None, 2) for line in shown.out.splitlines()[1:]]
        assert rows[0][:2] == [queue, "4"]
        for row, (name, kind) in zip(rows[1:], others.items(), strict=True):
            assert row == [name, "-", f"not a queue: a Redis {kind}"]
        as_json = await run_cli("-b", case.url, "queues", "-Q", f"set-{queue}", "--json")
        assert json.loads(as_json.out) == [{
            "name": f"set-{queue}", "exists": False, "messages": None, "consumers": None,
            "error": f"'set-{queue}' is not a queue: it is a Redis set",
        }]  # fmt: skip

        # The transport itself checks atomically (a type change after the CLI's check).
        async with aiocelerymon.Client(case.url) as c:
            with pytest.raises(NotAQueueError) as caught:
                await c.transport.purge_queue(odd)
            assert caught.value.what == "a Redis string"
        assert {key: raw.dump(key) for key in raw.keys("*")} == snapshot

        purged = await run_cli("-b", case.url, "purge", "-f", "-Q", queue)
        assert purged.out.splitlines() == [
            f"{queue}: 4 messages purged",
            "Purged 4 messages from 1 known task queue.",
        ]
        assert raw.smembers(bindings) == binding
        assert all(raw.exists(name) for name in others)
    finally:
        raw.close()
