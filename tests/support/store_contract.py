"""One contract for every Store adapter: subclass :class:`StoreContract` with a ``store``
fixture (an opened, empty store) and every test runs against that adapter."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aiocelerymon.store import Batch, EventRecord, Gap, Store, TaskFilter, TaskRecord, WorkerRecord
from aiocelerymon.web.search import parse_query

C = "redis://127.0.0.1:6379/0"
OTHER = "amqp://guest:**@127.0.0.1:5672//"
T0 = 1_700_000_000.0


def task(uuid: str, cluster: str = C, **fields: Any) -> TaskRecord:
    base: dict[str, Any] = {
        "uuid": uuid, "name": "proj.add", "state": "SUCCESS", "worker": "w1@host",
        "received": T0, "started": T0 + 1, "succeeded": T0 + 2, "timestamp": T0 + 2,
        "args": "(1, 2)", "kwargs": "{}", "result": "3", "exception": None, "traceback": None,
        "runtime": 1.0, "retries": 0, "clock": 5, "root_id": uuid, "parent_id": None,
        "children": [], "root": uuid, "parent": None, "routing_key": "celery",
    }  # fmt: skip
    base.update(fields)
    return TaskRecord(cluster, uuid, base)


def q(**kw: Any) -> TaskFilter:
    search = kw.pop("search", "")
    kw.setdefault("cluster", C)
    return TaskFilter(search=parse_query(search), **kw)


def ids(records: list[TaskRecord]) -> list[str]:
    return [r.uuid for r in records]


class StoreContract:
    async def test_round_trip_keeps_every_field(self, store: Store) -> None:
        record = task(
            "t1", state="FAILURE", exception="ValueError('boom')",
            traceback="Traceback (most recent call last):\n  ...\nValueError: boom",
            custom_field={"nested": [1, 2]}, eta=None,
        )  # fmt: skip
        await store.write(Batch(tasks=[record]))
        got = await store.get_task(C, "t1")
        assert got is not None
        assert got.fields == record.fields
        assert await store.get_task(C, "missing") is None
        assert await store.get_task(OTHER, "t1") is None  # clusters never mix

    async def test_upsert_replaces_the_row(self, store: Store) -> None:
        await store.write(Batch(tasks=[task("t1", state="STARTED", timestamp=T0 + 1)]))
        await store.write(Batch(tasks=[task("t1", state="SUCCESS", timestamp=T0 + 2)]))
        got = await store.get_task(C, "t1")
        assert got is not None and got.fields["state"] == "SUCCESS"
        assert await store.count_tasks(C) == 1

    async def test_events_per_task_in_order_and_deleted_with_the_task(self, store: Store) -> None:
        await store.write(
            Batch(
                tasks=[task("t1"), task("t2")],
                events=[
                    EventRecord(C, "t1", "task-received", T0, {"name": "proj.add"}),
                    EventRecord(C, "t2", "task-received", T0, {}),
                    EventRecord(C, "t1", "task-started", T0 + 1, {"pid": 7}),
                    EventRecord(C, "t1", "task-succeeded", T0 + 2, {"result": "3"}),
                ],
            )
        )
        timeline = await store.task_events(C, "t1")
        assert [(e.type, e.timestamp) for e in timeline] == [
            ("task-received", T0), ("task-started", T0 + 1), ("task-succeeded", T0 + 2)
        ]  # fmt: skip
        assert timeline[1].fields == {"pid": 7}
        await store.prune(C, keep=1)  # t1 and t2 have one timestamp: one of them goes
        left = [u for u in ("t1", "t2") if await store.get_task(C, u) is not None]
        assert len(left) == 1
        gone = ({"t1", "t2"} - set(left)).pop()
        assert await store.task_events(C, gone) == []

    async def test_workers(self, store: Store) -> None:
        await store.write(Batch(workers=[WorkerRecord(C, "w1@h", {"pid": 1}, T0)]))
        await store.write(Batch(workers=[WorkerRecord(C, "w1@h", {"pid": 2}, T0 + 5)]))
        await store.write(Batch(workers=[WorkerRecord(OTHER, "w9@h", {}, T0)]))
        assert await store.workers(C) == [WorkerRecord(C, "w1@h", {"pid": 2}, T0 + 5)]

    async def test_alive_and_gaps(self, store: Store) -> None:
        assert await store.last_alive(C) is None
        await store.write(Batch(alive=(C, T0)))
        await store.write(Batch(alive=(C, T0 + 10)))
        assert await store.last_alive(C) == T0 + 10
        await store.add_gap(Gap(C, T0, T0 + 60, "downtime"))
        await store.add_gap(Gap(C, T0 + 100, T0 + 101, "reconnect"))
        assert await store.gaps(C) == [
            Gap(C, T0 + 100, T0 + 101, "reconnect"), Gap(C, T0, T0 + 60, "downtime")
        ]  # fmt: skip
        assert await store.gaps(OTHER) == []
        await store.write(Batch(gaps=[Gap(C, T0 + 300, T0 + 301, "reconnect")]))
        assert (await store.gaps(C, limit=1)) == [Gap(C, T0 + 300, T0 + 301, "reconnect")]

    async def test_filters(self, store: Store) -> None:
        await store.write(
            Batch(
                tasks=[
                    task("a", name="proj.add", state="SUCCESS", worker="w1@h", received=T0,
                         started=T0 + 1, timestamp=T0 + 2),
                    task("b", name="proj.mul", state="FAILURE", worker="w2@h", received=T0 + 10,
                         started=T0 + 11, timestamp=T0 + 12),
                    task("c", name="proj.add", state="PENDING", worker=None, received=None,
                         started=None, timestamp=T0 + 20),
                    task("x", cluster=OTHER, name="proj.add"),
                ]
            )
        )  # fmt: skip
        assert ids(await store.query_tasks(q())) == ["c", "b", "a"]  # newest first
        assert ids(await store.query_tasks(q(name="proj.add"))) == ["c", "a"]
        assert ids(await store.query_tasks(q(name="PROJ.ADD"))) == ["c", "a"]
        assert ids(await store.query_tasks(q(state="failure"))) == ["b"]
        assert ids(await store.query_tasks(q(worker="w1@h"))) == ["a"]
        # As Flower: a task without the time is kept by a range on it.
        assert ids(await store.query_tasks(q(received_start=T0 + 5))) == ["c", "b"]
        assert ids(await store.query_tasks(q(started_end=T0 + 5))) == ["c", "a"]
        assert ids(await store.query_tasks(q(limit=1, offset=1))) == ["b"]
        assert ids(await store.query_tasks(q(offset=2))) == ["a"]
        assert ids(await store.query_tasks(q(limit=0))) == []

    async def test_sorting_as_flower(self, store: Store) -> None:
        await store.write(
            Batch(
                tasks=[
                    task("a", name="b.task", received=T0 + 2),
                    task("b", name="A.task", received=None),
                    task("c", name="c.task", received=T0 + 1),
                ]
            )
        )
        assert ids(await store.query_tasks(q(sort_by="name"))) == ["b", "a", "c"]
        assert ids(await store.query_tasks(q(sort_by="-name"))) == ["c", "a", "b"]
        # No value: first ascending, last descending.
        assert ids(await store.query_tasks(q(sort_by="received"))) == ["b", "c", "a"]
        assert ids(await store.query_tasks(q(sort_by="-received"))) == ["a", "c", "b"]

    async def test_full_text_search(self, store: Store) -> None:
        await store.write(
            Batch(
                tasks=[
                    task("id-one", name="billing.charge_card", args="('ACME corp', 42)",
                         kwargs="{'user': 'alice', 'retry': True}", result=None,
                         state="FAILURE", exception="CardDeclined('insufficient funds')"),
                    task("id-two", name="mail.send", args="('bob@example.com',)",
                         kwargs="{'user': 'bob'}", result="'delivered 100%_ok'"),
                    task("id-three", name="mail.digest", args="()", kwargs="{}",
                         result="None", worker="mailer@box"),
                ]
            )
        )  # fmt: skip

        async def search(text: str) -> list[str]:
            return sorted(ids(await store.query_tasks(q(search=text))))

        assert await search("charge") == ["id-one"]  # a substring of the name
        assert await search("acme") == ["id-one"]  # args, case-insensitive
        assert await search("insufficient") == ["id-one"]  # the exception
        assert await search("delivered") == ["id-two"]  # the result
        assert await search("mail") == ["id-three", "id-two"]
        assert await search("name:mail") == ["id-three", "id-two"]
        assert await search("args:mail") == []
        assert await search("worker:mailer") == ["id-three"]
        assert await search("mail OR acme") == ["id-one", "id-three", "id-two"]
        assert await search("mail bob") == ["id-two"]
        assert await search('"100%_ok"') == ["id-two"]  # LIKE wildcards are literal
        assert await search("100%x") == []
        assert await search("state:failure") == ["id-one"]
        assert await search("kwargs:user=bob") == ["id-two"]
        assert await search("kwargs:user=bo") == []  # an exact pair, not a substring
        assert await search("(kwargs:user=alice OR name:digest) card") == ["id-one"]
        assert await search("id-t") == ["id-three", "id-two"]  # the uuid
        assert await search("nothing-like-this") == []

    async def test_pair_search_pages(self, store: Store) -> None:
        await store.write(
            Batch(
                tasks=[
                    task(f"t{i:03}", kwargs=f"{{'n': {i % 3}}}", timestamp=T0 + i)
                    for i in range(30)
                ]
            )
        )
        page = await store.query_tasks(q(search="kwargs:n=1", limit=3, offset=2))
        assert ids(page) == ["t022", "t019", "t016"]

    async def test_retention_by_age_and_count(self, store: Store) -> None:
        now = time.time()
        await store.write(Batch(tasks=[task(f"t{i}", timestamp=now - 100 * i) for i in range(10)]))
        await store.write(Batch(tasks=[task("other", cluster=OTHER, timestamp=now - 10_000)]))
        assert await store.prune(C, before=now - 450) == 5  # t5..t9
        assert await store.prune(C, keep=3) == 2  # t3, t4
        assert sorted(ids(await store.query_tasks(q()))) == ["t0", "t1", "t2"]
        assert await store.count_tasks(OTHER) == 1

    async def test_recent_tasks_newest_first(self, store: Store) -> None:
        await store.write(Batch(tasks=[task(f"t{i}", timestamp=T0 + i) for i in range(5)]))
        assert ids(await store.recent_tasks(C, 3)) == ["t4", "t3", "t2"]

    async def test_bad_search_field_is_refused(self, store: Store) -> None:
        with pytest.raises(ValueError):
            await store.query_tasks(TaskFilter(cluster=C, search=("term", "data; --", "x")))

    async def test_big_batch(self, store: Store) -> None:
        await store.write(Batch(tasks=[task(f"t{i}", timestamp=T0 + i) for i in range(3000)]))
        assert await store.count_tasks(C) == 3000
        assert ids(await store.query_tasks(q(limit=2))) == ["t2999", "t2998"]
