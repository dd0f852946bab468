"""The node side of the pidbox, end to end over the memory broker with our own client."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiocelerymon import Client, RetryPolicy
from aiocelerymon.control import NodeReplies
from aiocelerymon.control.node import Node, NodeNameInUseError
from aiocelerymon.exceptions import ClosedError, ConnectionLostError, ResourceLockedError
from aiocelerymon.transports.memory import MemoryBroker
from aiocelerymon.wire import names
from aiocelerymon.wire.entities import Message

NODE = "svc@test"

NodeFactory = Callable[..., Node]


@pytest.fixture
def broker_name() -> str:
    return f"node-{uuid.uuid4().hex}"


@pytest.fixture
async def client(broker_name: str) -> AsyncIterator[Client]:
    async with Client(f"memory://{broker_name}") as c:
        yield c


@pytest.fixture
async def make_node(client: Client) -> AsyncIterator[NodeFactory]:
    """Build nodes on ``client`` (no uniqueness probe unless asked); all closed afterwards."""
    nodes: list[Node] = []

    def make(nodename: str = NODE, on: Client | None = None, **kwargs: Any) -> Node:
        kwargs.setdefault("unique_check_timeout", None)
        node = Node(on or client, nodename, **kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.aclose()


@pytest.fixture
async def node(make_node: NodeFactory) -> Node:
    n = make_node()
    await n.start()
    return n


async def call(client: Client, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """One command to NODE with a reply; returns NODE's reply value."""
    replies = await client.control.broadcast(
        command, arguments, destination=[NODE], reply=True, timeout=5.0
    )
    assert replies is not None
    assert [list(r) for r in replies] == [[NODE]]
    return replies[0][NODE]


def mine(replies: NodeReplies | None) -> Any:
    """NODE's value in an ``Inspect`` result."""
    assert replies is not None
    return replies[NODE]


# -- built-in commands ---------------------------------------------------------------------


async def test_ping(client: Client, node: Node) -> None:
    assert await client.control.ping(timeout=5.0, expected=[NODE]) == [{NODE: {"ok": "pong"}}]
    assert node.serving


async def test_stats_has_celerys_shape_and_declared_fields(
    broker_name: str, make_node: NodeFactory
) -> None:
    async with Client(f"memory://user:s3cret@{broker_name}") as client:
        node = make_node(on=client, stats=lambda: {"total": {"svc.job": 3}, "service": "x"})
        await node.start()
        stats = mine(await client.control.inspect(destination=[NODE], timeout=5.0).stats())
        await node.aclose()
    assert stats["pid"] == os.getpid()
    assert isinstance(stats["clock"], str) and int(stats["clock"]) > 0
    assert isinstance(stats["uptime"], int)
    assert stats["total"] == {"svc.job": 3}
    assert stats["service"] == "x"
    # Celery's default worker_prefetch_multiplier (4) times the pool.
    assert stats["prefetch_count"] == 4 == node.prefetch_count
    assert stats["pool"]["max-concurrency"] == node.pool_size == 1
    # The keys of a real 5.7 prefork worker's stats (captured from `celery inspect stats`).
    assert list(stats["pool"]) == [
        "implementation", "max-concurrency", "processes", "max-tasks-per-child",
        "put-guarded-by-semaphore", "timeouts", "writes",
    ]  # fmt: skip
    assert set(stats["pool"]["writes"]) == {"total", "avg", "all", "raw", "strategy", "inqueues"}
    assert list(stats["broker"]) == [
        "hostname", "userid", "virtual_host", "port", "insist", "ssl", "transport",
        "connect_timeout", "transport_options", "login_method", "uri_prefix", "heartbeat",
        "failover_strategy", "alternates", "credential_provider",
    ]  # fmt: skip
    assert stats["broker"]["userid"] == "user"
    assert stats["broker"]["transport"] == "memory"
    assert "password" not in stats["broker"]
    assert "s3cret" not in json.dumps(stats)
    assert {"utime", "stime", "maxrss"} <= set(stats["rusage"])


async def test_registered_names_and_task_info_items(client: Client, make_node: NodeFactory) -> None:
    plain = make_node(registered=["b.task", "a.task", "celery.chord_unlock"])
    await plain.start()
    assert await call(client, "registered", {"taskinfoitems": []}) == ["a.task", "b.task"]
    await plain.aclose()

    async def tasks() -> dict[str, dict[str, Any]]:
        return {"svc.add": {"rate_limit": "5/s", "queue": "q1"}, "svc.sub": {}}

    rich = make_node(registered=tasks)
    await rich.start()
    assert await call(client, "registered") == ["svc.add [rate_limit=5/s]", "svc.sub"]
    assert await call(client, "dump_tasks", {"taskinfoitems": ["queue", "_private"]}) == [
        "svc.add [queue=q1]",
        "svc.sub",
    ]


async def test_task_listings_and_query_task(client: Client, make_node: NodeFactory) -> None:
    job = {"id": "t1", "name": "svc.job", "args": [], "kwargs": {}}
    later = {"eta": None, "priority": 0, "request": {"id": "t2", "name": "svc.job"}}
    node = make_node(active=[job], scheduled=lambda: [later], revoked=["t0"])
    await node.start()
    inspect = client.control.inspect(destination=[NODE], timeout=5.0)
    assert mine(await inspect.active(safe=True)) == [job]
    assert mine(await inspect.reserved()) == []
    assert mine(await inspect.scheduled()) == [later]
    assert mine(await inspect.revoked()) == ["t0"]
    assert mine(await inspect.active_queues()) == []
    assert mine(await inspect.query_task("t1", "t2", "nope")) == {
        "t1": ["active", job],
        "t2": ["scheduled", later["request"]],
    }
    conf = mine(await inspect.conf())
    assert conf["broker_url"].startswith("memory://") and conf["task_serializer"] == "json"
    assert conf["control_exchange"] == "celery"


async def test_clock_hello_report_and_events(client: Client, node: Node) -> None:
    clock = (await call(client, "clock"))["clock"]
    # One clock per process, as in a Celery app: the client's reply handling moved it on too.
    assert isinstance(clock, int) and 0 < clock < node.clock.value
    assert await call(client, "hello", {"from_node": NODE}) is None
    hello = await call(client, "hello", {"from_node": "w1@elsewhere", "revoked": ["x"]})
    # A worker merges the other's revoked ids into its own and answers them (mingle).
    assert hello["revoked"] == ["x"] and hello["clock"] > clock
    assert node.is_revoked("x")
    report = await call(client, "report")
    assert "aiocelerymon:" in report["ok"] and NODE in report["ok"]
    assert await call(client, "heartbeat") is None
    assert await call(client, "enable_events") == {"ok": "task events enabled"}
    assert await call(client, "enable_events") == {"ok": "task events already enabled"}
    assert node.task_events
    assert await call(client, "disable_events") == {"ok": "task events disabled"}
    assert await call(client, "disable_events") == {"ok": "task events already disabled"}


async def test_clock_follows_request_clocks(client: Client, node: Node) -> None:
    client.mailbox.clock.value = 1000  # requests now carry clock 1001, 1002, ...
    assert (await call(client, "clock"))["clock"] > 1000


# -- custom commands and errors ------------------------------------------------------------


async def test_custom_async_and_sync_commands(client: Client, node: Node) -> None:
    @node.command()
    async def add(x: int, y: int = 0) -> dict[str, Any]:
        return {"ok": x + y}

    node.register("echo", lambda **kw: kw)
    assert {"add", "echo", "ping"} <= node.commands
    assert await call(client, "add", {"x": 2, "y": 3}) == {"ok": 5}
    assert await call(client, "add", {"x": 2}) == {"ok": 2}
    assert await call(client, "echo", {"a": [1]}) == {"a": [1]}


async def test_unknown_command_is_a_key_error_reply(client: Client, node: Node) -> None:
    assert await call(client, "nosuchcommand") == {"error": "KeyError('nosuchcommand')"}


async def test_bad_arguments_are_a_type_error_reply_and_the_handler_never_runs(
    client: Client, node: Node
) -> None:
    calls: list[Any] = []

    @node.command("add")
    async def _add(x: int, y: int) -> int:
        calls.append((x, y))
        return x + y

    unexpected = await call(client, "add", {"x": 1, "y": 2, "z": 3})
    assert unexpected == {"error": "TypeError(\"add() got an unexpected keyword argument 'z'\")"}
    missing = await call(client, "add", {"x": 1})
    assert missing["error"].startswith("TypeError(") and "'y'" in missing["error"]
    # Built-ins take no surprise arguments either when Celery's do not (report has no **kw).
    assert (await call(client, "report", {"x": 1}))["error"].startswith("TypeError(")
    # ...and accept them where Celery's accept **kwargs.
    assert await call(client, "ping", {"whatever": 1}) == {"ok": "pong"}
    assert calls == []


async def test_handler_exception_is_an_error_reply(client: Client, node: Node) -> None:
    @node.command()
    async def boom() -> None:
        raise RuntimeError("boom")

    @node.command()
    async def unserializable() -> object:
        return object()

    assert await call(client, "boom") == {"error": "RuntimeError('boom')"}
    assert (await call(client, "unserializable"))["error"].startswith("TypeError(")
    assert await call(client, "ping") == {"ok": "pong"}


# -- addressing, casts, concurrency --------------------------------------------------------


async def test_destination_and_pattern_filtering(client: Client, make_node: NodeFactory) -> None:
    for name in ("alpha@h1", "beta@h1", "beta@h2"):
        await make_node(name).start()

    async def who(**kwargs: Any) -> set[str]:
        replies = await client.control.broadcast("ping", reply=True, timeout=0.2, **kwargs)
        assert replies is not None
        return {node for reply in replies for node in reply}

    everyone = {"alpha@h1", "beta@h1", "beta@h2"}
    assert await who(expected=everyone) == everyone
    assert await who(destination=["beta@h2", "nobody@x"]) == {"beta@h2"}
    assert await who(pattern="beta@*", matcher="glob", expected=["beta@h1", "beta@h2"]) == {
        "beta@h1",
        "beta@h2",
    }
    assert await who(pattern=r"\w+@h1", matcher="pcre", expected=["alpha@h1", "beta@h1"]) == {
        "alpha@h1",
        "beta@h1",
    }


async def test_a_cast_runs_but_is_not_answered(client: Client, node: Node) -> None:
    seen = asyncio.Event()

    @node.command()
    async def mark(value: int) -> dict[str, Any]:
        seen.set()
        return {"ok": value}

    await client.control.broadcast("mark", {"value": 1}, destination=[NODE])
    await asyncio.wait_for(seen.wait(), 5)
    assert await call(client, "ping") == {"ok": "pong"}
    assert client.mailbox.dropped == 0  # no reply without ticket ever reached our reply queue
    assert node.handled == 2


async def test_a_slow_handler_does_not_block_ping(client: Client, node: Node) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @node.command()
    async def slow() -> dict[str, str]:
        started.set()
        await release.wait()
        return {"ok": "done"}

    pending = asyncio.create_task(call(client, "slow"))
    await asyncio.wait_for(started.wait(), 5)
    assert await call(client, "ping") == {"ok": "pong"}
    assert not pending.done()
    release.set()
    assert await pending == {"ok": "done"}


async def test_undecodable_requests_are_counted_and_the_node_keeps_answering(
    client: Client, node: Node
) -> None:
    exchange = names.pidbox_exchange()
    for message in (
        Message(b"{not json", "application/json"),
        Message(b"\x80\x04K\x01.", "application/x-python-serialize", "binary"),
        Message(b'["a", "list"]', "application/json"),
        Message(b"{}", ""),
    ):
        await client.transport.publish(message, exchange)
    assert await call(client, "ping") == {"ok": "pong"}
    assert node.malformed == 4


async def test_concurrency_bound_queues_requests_instead_of_dropping(
    client: Client, make_node: NodeFactory
) -> None:
    node = make_node(concurrency=1)
    await node.start()
    started, release = asyncio.Event(), asyncio.Event()

    @node.command()
    async def slow() -> str:
        started.set()
        await release.wait()
        return "done"

    pending = asyncio.create_task(call(client, "slow"))
    await asyncio.wait_for(started.wait(), 5)
    ping = asyncio.create_task(call(client, "ping"))
    # Nothing to await for "not answered": a short wait that must run out.
    done, _ = await asyncio.wait({ping}, timeout=0.05)
    assert not done and node.handled == 1
    release.set()
    assert await pending == "done"
    assert await ping == {"ok": "pong"}


# -- lifecycle -----------------------------------------------------------------------------


async def test_aclose_removes_the_queue_and_cancels_handlers(
    client: Client, broker_name: str, node: Node
) -> None:
    broker = MemoryBroker.get(broker_name)
    queue = names.node_queue_name(NODE)
    assert queue in broker.queue_names()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @node.command()
    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    await client.control.broadcast("forever", destination=[NODE])
    await asyncio.wait_for(started.wait(), 5)
    await node.aclose()
    assert cancelled.is_set()
    assert queue not in broker.queue_names()
    assert not node.serving
    await node.wait_closed()
    await node.aclose()  # idempotent
    with pytest.raises(ClosedError):
        await node.start()
    assert await client.control.ping(timeout=0.1) == []


async def test_context_manager_and_repr(client: Client) -> None:
    async with Node(client, NODE, unique_check_timeout=None) as node:
        assert repr(node).startswith(f"<Node {NODE!r} SERVING on memory://")
        await node.start()  # idempotent while serving
        assert await call(client, "ping") == {"ok": "pong"}
    assert "CLOSED" in repr(node)


def test_node_name_must_have_an_at_sign(client: Client) -> None:
    with pytest.raises(ValueError, match="name@host"):
        Node(client, "no-at-sign")


async def test_custom_namespace(broker_name: str, make_node: NodeFactory) -> None:
    async with Client(f"memory://{broker_name}", control_exchange="ops") as ops:
        await make_node(on=ops).start()
        assert await ops.control.ping(timeout=5.0, expected=[NODE]) == [{NODE: {"ok": "pong"}}]
    assert names.node_queue_name(NODE, "ops") not in MemoryBroker.get(broker_name).queue_names()


async def test_shutdown_is_refused_by_default(client: Client, node: Node) -> None:
    reply = await call(client, "shutdown")
    assert reply["error"].startswith("shutdown refused")
    assert node.serving


async def test_shutdown_when_allowed_stops_without_reply(
    client: Client, broker_name: str, make_node: NodeFactory
) -> None:
    node = make_node(allow_shutdown=True)
    await node.start()
    replies = await client.control.broadcast(
        "shutdown", destination=[NODE], reply=True, timeout=0.2
    )
    assert replies == []
    await asyncio.wait_for(node.wait_closed(), 5)
    assert names.node_queue_name(NODE) not in MemoryBroker.get(broker_name).queue_names()


# -- duplicate names -----------------------------------------------------------------------


async def test_duplicate_name_found_by_the_ping_probe(
    broker_name: str, client: Client, node: Node, make_node: NodeFactory
) -> None:
    # Non-exclusive node queues (Celery <= 5.6 defaults, and Redis, where nothing is locked):
    # only the probe can tell.
    async with Client(f"memory://{broker_name}", control_queue_exclusive=False) as other:
        twin = make_node(on=other, unique_check_timeout=1.0)
        with pytest.raises(NodeNameInUseError, match="answered a ping") as info:
            await twin.start()
    assert info.value.nodename == NODE
    assert not twin.serving
    assert await call(client, "ping") == {"ok": "pong"}  # the first node is unharmed


async def test_duplicate_name_found_by_the_exclusive_queue_lock(
    broker_name: str, client: Client, node: Node, make_node: NodeFactory
) -> None:
    async with Client(f"memory://{broker_name}") as other:
        twin = make_node(on=other)  # no probe: the broker refuses the locked queue (AMQP 405)
        with pytest.raises(NodeNameInUseError, match="locked") as info:
            await twin.start()
    assert isinstance(info.value.__cause__, ResourceLockedError)
    assert await call(client, "ping") == {"ok": "pong"}


async def test_probe_passes_when_the_name_is_free(client: Client, make_node: NodeFactory) -> None:
    node = make_node(unique_check_timeout=0.05)
    await node.start()
    assert node.serving


async def test_the_node_stops_when_its_client_closes(broker_name: str) -> None:
    client = Client(f"memory://{broker_name}")
    node = Node(client, NODE, unique_check_timeout=None)
    await node.start()
    await client.aclose()
    await asyncio.wait_for(node.wait_closed(), 5)
    assert not node.serving


async def test_the_node_reports_a_broker_lost_for_good(broker_name: str) -> None:
    retry = RetryPolicy(initial=0.01, max_attempts=1, jitter=False)
    async with Client(f"memory://{broker_name}", retry=retry) as client:
        node = Node(client, NODE, unique_check_timeout=None)
        await node.start()
        MemoryBroker.get(broker_name).stop()
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(node.wait_closed(), 5)
        assert not node.serving
