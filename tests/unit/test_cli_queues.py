"""``aiocelerymon queues`` and ``purge`` on the in-memory broker: output, flags, confirmation.

The same commands against RabbitMQ and Redis with Celery's own task messages are in
tests/integration/test_queues_purge.py.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

import aiocelerymon
from aiocelerymon import cli
from aiocelerymon.cli._task_queues import task_queues
from aiocelerymon.demo import DemoWorker
from aiocelerymon.transports import Binding, Exchange, ExchangeKind, Message


@dataclass
class Result:
    code: int
    out: str
    err: str


async def run_cli(*argv: str, stdin: str = "") -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return Result(code, out.getvalue(), err.getvalue())


@dataclass
class Broker:
    url: str
    client: aiocelerymon.Client

    async def fill(self, queue: str, count: int) -> None:
        """A kept task queue bound as Celery declares it, with ``count`` messages waiting."""
        ex = Exchange(queue, ExchangeKind.DIRECT, durable=True)
        binding = Binding(ex, queue, queue=queue, exclusive=False, durable=True, auto_delete=False)
        async with self.client.transport.subscribe(binding):
            pass
        for n in range(count):
            await self.client.transport.publish(Message(b"[[%d], {}, {}]" % n), ex, queue)

    async def depth(self, queue: str) -> int | None:
        found = await self.client.transport.queue_depth(queue)
        return None if found is None else found.messages


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    url = f"memory://queues-{uuid.uuid4().hex}"
    async with aiocelerymon.Client(url) as client:
        yield Broker(url, client)


@pytest.fixture
async def worker(broker: Broker) -> AsyncIterator[DemoWorker]:
    """A node reporting `celery` in active_queues, as a worker consuming it does."""
    node = DemoWorker(broker.client, "w1@test", queue="celery")
    await node.node.start()
    yield node
    await node.node.aclose()


async def test_queues_discovers_the_workers_queues(broker: Broker, worker: DemoWorker) -> None:
    await broker.fill("celery", 3)
    result = await run_cli("-b", broker.url, "queues", "-t", "0.5")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "QUEUE   MESSAGES  CONSUMERS",
        "celery         3          0",
    ]


async def test_queues_named_json_and_missing(broker: Broker) -> None:
    await broker.fill("hipri", 2)
    result = await run_cli("-b", broker.url, "queues", "-Q", "hipri,nosuch", "--json")
    assert result.code == 0
    assert json.loads(result.out) == [
        {"name": "hipri", "exists": True, "messages": 2, "consumers": 0},
        {"name": "nosuch", "exists": False, "messages": None, "consumers": None},
    ]
    text = await run_cli("-b", broker.url, "queues", "-Q", "nosuch")
    assert text.out.splitlines()[1].split() == ["nosuch", "-", "no", "such", "queue"]
    assert "Traceback" not in text.err


async def test_queues_watch_refreshes(broker: Broker) -> None:
    await broker.fill("hipri", 1)
    result = await run_cli(
        "-b", broker.url, "queues", "-Q", "hipri", "--watch", "0.01", "--count", "3"
    )
    assert result.code == 0
    assert result.out.count("Every 0.01s: queues on memory://") == 3
    assert result.out.count("hipri         1          0") == 3


async def test_no_queue_is_an_error(broker: Broker) -> None:
    nothing = await run_cli("-b", broker.url, "queues", "-t", "0.1")
    assert nothing.code == cli.EX_UNAVAILABLE
    assert nothing.err == (
        "Error: No task queues to work on: none named with -Q, and no worker answered "
        "active_queues within 0.1s.\n"
    )
    excluded = await run_cli("-b", broker.url, "purge", "-Q", "a", "-X", "a", "-f")
    assert excluded.code == cli.EX_UNAVAILABLE


async def test_purge_asks_first_and_no_keeps_everything(broker: Broker, worker: DemoWorker) -> None:
    await broker.fill("celery", 4)
    result = await run_cli("-b", broker.url, "purge", "-t", "0.5", stdin="n\n")
    assert result.code == cli.EX_FAILURE
    assert result.out == (
        "WARNING: This will remove all tasks from queue: celery.\n"
        "         There is no undo for this operation!\n\n"
        "(to skip this prompt use the -f option)\n"
        "Are you sure you want to delete all tasks? [y/N]: \n"
    )
    assert result.err == "Aborted!\n"
    assert await broker.depth("celery") == 4
    # End of input is not a yes either.
    assert (await run_cli("-b", broker.url, "purge", "-Q", "celery")).code == cli.EX_FAILURE
    assert await broker.depth("celery") == 4


async def test_purge_yes_prints_per_queue_and_celerys_summary(
    broker: Broker, worker: DemoWorker
) -> None:
    await broker.fill("celery", 4)
    await broker.fill("hipri", 1)
    result = await run_cli("-b", broker.url, "purge", "-Q", "celery,hipri,nosuch", stdin="yes\n")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-4:] == [
        "celery: 4 messages purged",
        "hipri: 1 message purged",
        "nosuch: no such queue",
        "Purged 5 messages from 3 known task queues.",
    ]
    assert (await broker.depth("celery"), await broker.depth("hipri")) == (0, 0)
    again = await run_cli("-b", broker.url, "purge", "-f", "-t", "0.5")
    assert again.out == "celery: 0 messages purged\nNo messages purged from 1 queue.\n"


async def test_purge_exclude(broker: Broker, worker: DemoWorker) -> None:
    await broker.fill("celery", 2)
    await broker.fill("keep", 2)
    result = await run_cli(
        "-b", broker.url, "purge", "-f", "-Q", "celery", "-Q", "keep", "-X", "keep"
    )
    assert result.out.splitlines() == [
        "celery: 2 messages purged",
        "Purged 2 messages from 1 known task queue.",
    ]
    assert await broker.depth("keep") == 2


PIDBOX = "it is a remote-control (pidbox) queue"
UNACKED = "it holds kombu's unacknowledged messages, not waiting ones"


@pytest.mark.parametrize(
    ("queue", "why"),
    [
        ("w1@test.celery.pidbox", PIDBOX),
        ("0f1e.reply.celery.pidbox", PIDBOX),
        ("celeryev.6b1c", "it is an event queue"),
        ("unacked", UNACKED),
        ("unacked_index", UNACKED),
    ],
)
async def test_purge_refuses_control_event_and_unacked(
    broker: Broker, queue: str, why: str
) -> None:
    await broker.fill("celery", 1)
    result = await run_cli("-b", broker.url, "purge", "-f", "-Q", f"celery,{queue}")
    assert result.code == cli.EX_USAGE
    assert result.err == f"Error: Refusing to purge {queue!r}: {why}.\n"
    assert await broker.depth("celery") == 1  # refused before anything was purged


async def test_help_lists_the_new_commands() -> None:
    result = await run_cli("--help")
    for line in ("  queues ", "  purge ", "  demo "):
        assert line in result.out
    purge = await run_cli("purge", "--help")
    assert "-f, --force" in purge.out and "-X QUEUES, --exclude-queues QUEUES" in purge.out


async def test_default_queues_are_the_apps_and_the_workers(
    broker: Broker, worker: DemoWorker
) -> None:
    """As `celery purge`: the app's task queues by default, here plus what workers consume."""
    from celery import Celery
    from kombu import Queue

    app = Celery("q", broker=broker.url, set_as_current=False)
    app.conf.task_queues = [Queue("hipri"), Queue("lopri"), Queue("celery")]
    invocation = cli.Invocation(subcommand="purge", timeout=0.5, exclude=("lopri",))
    names = await task_queues(broker.client, invocation, app)
    assert names == ["hipri", "celery"]
    named = cli.Invocation(subcommand="purge", queues=("x", "y", "x"), exclude=("y",))
    assert await task_queues(broker.client, named, app) == ["x"]
