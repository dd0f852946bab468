"""The shipped pytest plugin: isolated namespaces, the client fixture and the async helpers.

Real workers through ``celery_worker_process`` are exercised by examples/ (a user's project)
and by the interop suite; here the fake worker stands in, on both brokers.
"""

from __future__ import annotations

import asyncio

import pytest

from aiocelerymon import Client
from aiocelerymon.testing import (
    BrokerNamespace,
    FakeWorker,
    WaitTimeoutError,
    collect_events,
    wait_for_workers,
)

pytestmark = pytest.mark.integration

_seen: dict[str, set[str]] = {"redis": set(), "rabbitmq": set()}


@pytest.mark.parametrize("round", [1, 2])
def test_every_test_gets_its_own_namespace(
    round: int, redis_url: str, rabbitmq_url: str, aiocelerymon_broker: BrokerNamespace
) -> None:
    # Four tests (two rounds x two brokers), each with new URLs: never one seen before.
    for broker, url in (("redis", redis_url), ("rabbitmq", rabbitmq_url)):
        assert url not in _seen[broker]
        _seen[broker].add(url)
    # One namespace per broker and test: the parametrized fixture is the same one.
    assert (
        aiocelerymon_broker.url
        == {"redis": redis_url, "rabbitmq": rabbitmq_url}[aiocelerymon_broker.broker]
    )


async def test_namespaces_do_not_hear_each_other(
    aiocelerymon_client: Client,
    aiocelerymon_broker: BrokerNamespace,
    request: pytest.FixtureRequest,
) -> None:
    # A second namespace on the same server: a node there must not answer our ping.
    server = request.getfixturevalue(
        "redis_server" if aiocelerymon_broker.broker == "redis" else "rabbit_server"
    )
    other: BrokerNamespace = server.namespace()
    assert other.url != aiocelerymon_broker.url
    async with (
        Client(other.url, **other.client_options()) as elsewhere,
        FakeWorker(elsewhere, "other@elsewhere"),
        FakeWorker(aiocelerymon_client, "here@test"),
    ):
        assert await wait_for_workers(aiocelerymon_client, 1, timeout=10) == ["here@test"]
        replies = await aiocelerymon_client.control.ping(timeout=1.0)
        assert [list(r) for r in replies] == [["here@test"]]
    server.release(other)


async def test_fake_worker_task_lifecycle_through_the_helpers(aiocelerymon_client: Client) -> None:
    async with collect_events(aiocelerymon_client) as events:
        async with FakeWorker(aiocelerymon_client, "fake@test", registered=["app.add"]) as fake:
            assert await events.wait_for_workers(1, timeout=10) == ["fake@test"]
            registered = await aiocelerymon_client.control.inspect(
                destination=["fake@test"], timeout=5
            ).registered()
            assert registered == {"fake@test": ["app.add"]}
            ok = await fake.run_task("app.add", (2, 2), result=4)
            bad = await fake.run_task("app.add", (1,), exception=TypeError("missing y"))
            task = await events.wait_for_task_state(ok, "SUCCESS", timeout=10)
            assert (task.name, task.result, task.worker.hostname) == ("app.add", "4", "fake@test")
            await events.wait_for_task_state(bad, "FAILURE", timeout=10)
        assert events.types(ok) == ["task-received", "task-started", "task-succeeded"]
        with pytest.raises(WaitTimeoutError, match=r"ended in FAILURE, not SUCCESS.*task-failed"):
            await events.wait_for_task_state(bad, "SUCCESS", timeout=5)


async def test_waits_fail_with_what_was_seen(aiocelerymon_client: Client) -> None:
    async with collect_events(aiocelerymon_client, wakeup=False) as events:
        with pytest.raises(WaitTimeoutError, match=r"not SUCCESS within 0.3s \(state: never seen"):
            await events.wait_for_task_state("no-such-task", timeout=0.3)
    with pytest.raises(WaitTimeoutError, match=r"did not answer ping within 0.5s; answered: \[\]"):
        await wait_for_workers(aiocelerymon_client, ["nobody@nowhere"], timeout=0.5)


async def test_active_task_of_the_fake_worker_is_inspectable(aiocelerymon_client: Client) -> None:
    started, finish = asyncio.Event(), asyncio.Event()
    async with FakeWorker(aiocelerymon_client, "busy@test") as fake:
        running = asyncio.create_task(
            fake.run_task("app.sleep", (5,), started=started, finish=finish)
        )
        await asyncio.wait_for(started.wait(), 10)
        active = await aiocelerymon_client.control.inspect(
            destination=["busy@test"], timeout=5
        ).active()
        finish.set()
        task_id = await running
    assert active is not None
    assert [t["id"] for t in active["busy@test"]] == [task_id]
