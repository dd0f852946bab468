"""aiocelerymon.testing without a broker: namespaces, and the helpers on the memory transport."""

from __future__ import annotations

import asyncio

import pytest

from aiocelerymon import Client
from aiocelerymon.testing import (
    BrokerNamespace,
    FakeWorker,
    RabbitServer,
    RedisServer,
    WaitTimeoutError,
    collect_events,
    wait_for_workers,
)
from aiocelerymon.testing.brokers import VHOST_BATCH


def test_external_redis_is_isolated_by_key_prefix() -> None:
    server = RedisServer(url="redis://example.invalid:6379/2", owned=False)
    one, two = server.namespace(), server.namespace()
    assert one.url == two.url == server.url  # no databases handed out on a server not ours
    prefixes = {ns.transport_options["global_keyprefix"] for ns in (one, two)}
    assert len(prefixes) == 2
    assert one.celery_config == {
        "broker_url": server.url,
        "broker_transport_options": one.transport_options,
    }
    assert one.client_options() == {"broker_transport_options": one.transport_options}


def test_external_rabbitmq_cannot_be_isolated_and_says_so() -> None:
    server = RabbitServer(url="amqp://guest:guest@example.invalid//", owned=False)
    namespace = server.namespace()
    assert (namespace.url, namespace.isolated) == (server.url, False)
    assert namespace.celery_config == {"broker_url": server.url}
    server.release(namespace)  # nothing to delete, and no rabbitmqctl call attempted


def test_vhost_urls_are_quoted() -> None:
    server = RabbitServer(url="amqp://guest:guest@127.0.0.1:5672//", owned=False)
    assert server.url_for_vhost("a/b") == "amqp://guest:guest@127.0.0.1:5672/a%2Fb"
    assert BrokerNamespace("rabbitmq", server.url).client_options() == {}


async def test_fake_worker_answers_and_its_tasks_reach_the_event_log() -> None:
    async with Client("memory://") as client, collect_events(client) as events:
        async with FakeWorker(client, "fake@unit", registered=["app.add"]) as fake:
            assert await wait_for_workers(client, ["fake@unit"], timeout=5) == ["fake@unit"]
            assert await events.wait_for_workers(1, timeout=5) == ["fake@unit"]
            ok = await fake.run_task("app.add", (2, 2), result=4)
            task = await events.wait_for_task_state(ok, timeout=5)
            assert (task.state, task.result, task.args) == ("SUCCESS", "4", "(2, 2)")
            bad = await fake.run_task("app.add", exception=KeyError("x"))
            with pytest.raises(WaitTimeoutError, match=r"ended in FAILURE, not SUCCESS"):
                await events.wait_for_task_state(bad, "SUCCESS", timeout=5)
        offline = await events.wait_for(
            lambda ev: ev["type"] == "worker-offline", timeout=5, what="worker-offline"
        )
        assert offline["hostname"] == "fake@unit"


async def test_wait_for_reports_what_it_saw() -> None:
    async with (
        Client("memory://") as client,
        collect_events(client, wakeup=False) as events,
        FakeWorker(client, "seen@unit"),
    ):
        with pytest.raises(WaitTimeoutError, match=r"no task-failed within 0.2s; .*seen@unit"):
            await events.wait_for(
                lambda ev: ev["type"] == "task-failed", timeout=0.2, what="task-failed"
            )


async def test_collect_events_leaves_no_task_behind() -> None:
    async with Client("memory://") as client:
        before = len(asyncio.all_tasks())
        async with collect_events(client):
            pass
        assert len(asyncio.all_tasks()) == before


def test_vhosts_are_made_in_batches_and_one_at_a_time_if_eval_is_refused() -> None:
    calls: list[tuple[str, ...]] = []

    def ctl(args: object) -> str:
        calls.append(tuple(args))  # type: ignore[arg-type]
        return "ok\n"

    server = RabbitServer(url="amqp://guest:guest@127.0.0.1:5672//", owned=True, _ctl=ctl)
    urls = {server.namespace().url for _ in range(VHOST_BATCH + 1)}
    assert len(urls) == VHOST_BATCH + 1  # every namespace a vhost of its own
    assert [c[0] for c in calls] == ["eval", "eval"]  # two rabbitmqctl runs, not 2 x 9
    assert all(url.rsplit("/", 1)[1] in calls[0][1] + calls[1][1] for url in urls)

    def no_eval(args: object) -> str:
        args = tuple(args)  # type: ignore[arg-type]
        calls.append(args)
        if args[0] == "eval":
            raise RuntimeError("rabbitmqctl eval exited 70")
        return ""

    calls.clear()
    server = RabbitServer(url="amqp://guest:guest@127.0.0.1:5672//", owned=True, _ctl=no_eval)
    one, two = server.namespace(), server.namespace()
    assert one.url != two.url
    # eval refused once, then the documented commands, one vhost each time.
    assert [c[0] for c in calls] == ["eval", *["add_vhost", "set_permissions"] * 2]


def test_worker_config_is_laid_over_the_apps_own() -> None:
    from celery import Celery

    from aiocelerymon.testing.worker_app import overlay

    app = Celery("proj", set_as_current=False)
    app.conf.broker_transport_options = {"visibility_timeout": 60, "global_keyprefix": "old:"}
    app.conf.task_default_queue = "mine"
    overlay(
        app,
        {"broker_transport_options": {"global_keyprefix": "t1:"}, "worker_prefetch_multiplier": 1},
    )
    assert app.conf.broker_transport_options == {
        "visibility_timeout": 60,
        "global_keyprefix": "t1:",
    }
    assert (app.conf.task_default_queue, app.conf.worker_prefetch_multiplier) == ("mine", 1)
    app.close()
