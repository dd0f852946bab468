"""``aiocelerymon migrate`` on the memory broker: what moves, what stays, what is counted.

Real brokers, real workers, ``celery migrate`` side by side and SIGKILL mid-stream:
tests/integration/interop/test_migrate_interop.py.
"""

from __future__ import annotations

import io
import json
import uuid

import pytest

from aiocelerymon import cli
from aiocelerymon.transports import Exchange, ExchangeKind, Message, TransportBase
from aiocelerymon.transports.memory import MemoryTransport

DEFAULT = Exchange("", ExchangeKind.DIRECT)


def task(n: int, name: str = "proj.add", priority: int = 0) -> Message:
    body = json.dumps([[n, n], {}, {"callbacks": None, "errbacks": None}]).encode()
    return Message(
        body,
        headers={"task": name, "id": f"id-{n}", "lang": "py"},
        delivery_mode=2,
        priority=priority,
        properties={"correlation_id": f"id-{n}", "reply_to": "caller.q"},
    )


@pytest.fixture
async def brokers() -> tuple[str, str]:
    return f"memory://src-{uuid.uuid4().hex}", f"memory://dst-{uuid.uuid4().hex}"


async def fill(url: str, messages: list[Message], queue: str = "celery") -> None:
    async with MemoryTransport(url) as t:
        await t.ensure_queue(queue)
        for m in messages:
            await t.publish(m, DEFAULT, queue)


async def drain(t: TransportBase, queue: str = "celery") -> list[Message]:
    found = []
    while (got := await t.get(queue)) is not None:
        d = got.delivery
        found.append(Message(d.body, d.content_type or "", d.content_encoding or "",
                             dict(d.headers), d.delivery_mode or 0, d.priority or 0,
                             dict(d.properties)))  # fmt: skip
        await got.ack()
    return found


async def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_moves_messages_unchanged_and_prints_celerys_lines(brokers: tuple[str, str]) -> None:
    src, dst = brokers
    sent = [task(n, priority=n % 2) for n in range(3)]
    await fill(src, sent)
    code, out, err = await run("migrate", "-a", "-t", "0.1", src, dst)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        "Migrating task 1/3: [[1, 1], {}, {'callbacks': None, 'errbacks': None}]"
    )  # the priority-1 message first, as a priority queue hands them out
    assert [line.split(":")[0] for line in lines] == [f"Migrating task {i}/3" for i in (1, 2, 3)]
    async with MemoryTransport(src) as s, MemoryTransport(dst) as d:
        moved = await drain(d)
        assert await drain(s) == []  # -a: acknowledged, so gone from SOURCE
    assert sorted(moved, key=lambda m: m.headers["id"]) == sent  # byte for byte


async def test_without_ack_it_copies_as_celery_does(brokers: tuple[str, str]) -> None:
    src, dst = brokers
    sent = [task(n) for n in range(2)]
    await fill(src, sent)
    code, out, _ = await run("migrate", "-t", "0.1", src, dst)
    assert code == 0 and out.count("Migrating task") == 2
    async with MemoryTransport(src) as s, MemoryTransport(dst) as d:
        assert await drain(d) == sent
        assert await drain(s) == sent  # still there, in order


async def test_tasks_filter_limit_and_queue_rename(brokers: tuple[str, str]) -> None:
    src, dst = brokers
    await fill(src, [task(0, "proj.a"), task(1, "proj.b"), task(2, "proj.a"), task(3, "proj.a")],
               queue="jobs")  # fmt: skip
    code, out, _ = await run(
        "migrate", "-a", "-t", "0.1", "-T", "proj.a", "-n", "2", "-Q", "jobs:work", src, dst
    )
    assert code == 0 and out.count("Migrating task") == 2
    async with MemoryTransport(src) as s, MemoryTransport(dst) as d:
        assert [m.headers["id"] for m in await drain(d, "work")] == ["id-0", "id-2"]
        # proj.b was not ours to move; id-3 was past the limit.
        assert sorted(m.headers["id"] for m in await drain(s, "jobs")) == ["id-1", "id-3"]


async def test_redelivered_messages_are_counted_as_possible_duplicates(
    brokers: tuple[str, str],
) -> None:
    src, dst = brokers
    await fill(src, [task(0), task(1)])
    # A migrate that died after publishing id-0 but before acknowledging it:
    crashed = MemoryTransport(src)
    await crashed.connect()
    held = await crashed.get("celery")
    assert held is not None
    await crashed.aclose()
    code, out, err = await run("migrate", "-a", "-t", "0.1", src, dst)
    assert code == 0 and out.count("Migrating task") == 2
    assert "1 of them redelivered by SOURCE" in err


async def test_pickled_bodies_move_but_are_never_decoded(brokers: tuple[str, str]) -> None:
    src, dst = brokers
    evil = Message(
        b"\x80\x04cos\nsystem\n.",
        content_type="application/x-python-serialize",
        content_encoding="binary",
        headers={"task": "proj.x"},
        delivery_mode=2,
    )
    await fill(src, [evil])
    code, out, _ = await run("migrate", "-a", "-t", "0.1", src, dst)
    assert code == 0
    assert "<14 bytes of application/x-python-serialize>" in out
    async with MemoryTransport(dst) as d:
        (moved,) = await drain(d)
    assert moved.body == evil.body


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate", "memory://a"], "Missing argument 'DESTINATION'."),
        (["migrate", "-n", "-1", "memory://a", "memory://b"], "is not an integer at least 0"),
        (["migrate", "-n", "x", "memory://a", "memory://b"], "is not an integer"),
        (["migrate", "-t", "inf", "memory://a", "memory://b"], "is not a number at least 0"),
        (["migrate", "-Q", ":x", "memory://a", "memory://b"], "bad queue"),
    ],
)
async def test_usage_errors(args: list[str], message: str) -> None:
    code, _, err = await run(*args)
    assert code == 2
    assert message in err
