"""``aiocelerymon migrate`` between real RabbitMQ and Redis: the same lines and the same messages
as ``celery migrate``, and real workers on DEST run what was moved. SIGKILL mid-stream (no
workers involved, so once per run): tests/integration/test_migrate_kill.py.

Task messages are produced by Celery itself (``send_task``) with no worker on SOURCE.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import celery
import pytest

# Imported before any fixture's event loop (see test_result_interop.py).
import aiocelerymon.transports.amqp
import aiocelerymon.transports.redis  # noqa: F401
from aiocelerymon.cli.result import _fetch
from aiocelerymon.results import Results, ResultSettings
from aiocelerymon.testing import BrokerNamespace
from aiocelerymon.transports import Delivery, create_transport
from tests.support.celery_worker import REPO_ROOT, celery_env, celery_worker

pytestmark = [pytest.mark.integration, pytest.mark.interop]

ADD = "tests.integration.celery_app.add"
DEADLINE = 120.0


def send(url: str, count: int, options: dict[str, Any] | None = None) -> list[str]:
    """``count`` add(n, n) task messages on ``url``'s celery queue, sent by Celery."""
    app = celery.Celery("producer", broker=url, set_as_current=False)
    if options:
        app.conf.broker_transport_options = options
    try:
        with app.producer_or_acquire() as producer:
            return [
                app.send_task(ADD, (n, n), producer=producer, priority=n % 3).id
                for n in range(count)
            ]
    finally:
        app.close()


def drain(url: str, queue: str = "celery", options: dict[str, Any] | None = None) -> list[Delivery]:
    async def go() -> list[Delivery]:
        found: list[Delivery] = []
        async with create_transport(url, transport_options=options) as t:
            while (got := await t.get(queue)) is not None:
                found.append(got.delivery)
                await got.ack()
        return found

    return asyncio.run(go())


def tool(
    name: str, *args: str, url_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", name, *args],
        cwd=REPO_ROOT,
        env=celery_env({}, base=url_env),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


@pytest.fixture
def redis_ns(redis_server: Any) -> BrokerNamespace:
    namespace: BrokerNamespace = redis_server.namespace()
    return namespace


@pytest.fixture
def amqp_ns(rabbit_server: Any) -> Iterator[BrokerNamespace]:
    namespace = rabbit_server.namespace()
    yield namespace
    rabbit_server.release(namespace)


def _essentials(d: Delivery) -> tuple[Any, ...]:
    return (
        d.body,
        d.content_type,
        d.content_encoding,
        dict(d.headers),
        d.delivery_mode,
        d.priority,
        d.properties.get("correlation_id"),
        d.properties.get("reply_to"),
    )


def celery_migrate(source: str, dest: str, expected: int) -> list[str]:
    """``celery migrate SOURCE DEST``'s lines. Celery 5.7's never ends by its own timeout
    (it keeps waiting after the last message), so it is stopped once it printed them all."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "migrate", source, dest],
        cwd=REPO_ROOT,
        env=celery_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    watchdog = threading.Timer(DEADLINE / 2, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if len(lines) == expected:
                break
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.communicate(timeout=DEADLINE)  # reaps it and closes the pipe
    return lines


def test_same_lines_and_messages_as_celery_migrate(
    amqp_ns: BrokerNamespace, redis_ns: BrokerNamespace, redis_server: Any
) -> None:
    celerys_dest = redis_server.namespace()
    ids = send(amqp_ns.url, 4)
    # Without -a ours copies (nothing acknowledged, all handed back): Celery then sees the same.
    ours = tool("aiocelerymon", "migrate", amqp_ns.url, redis_ns.url)
    assert ours.returncode == 0, ours.stderr
    theirs = celery_migrate(amqp_ns.url, celerys_dest.url, 4)
    assert ours.stdout.splitlines() == theirs
    assert theirs[0] == (
        "Migrating task 1/4: [[0, 0], {}, "
        "{'callbacks': None, 'errbacks': None, 'chain': None, 'chord': None}]"
    )
    celerys, ours_moved = drain(celerys_dest.url), drain(redis_ns.url)
    assert [d.headers["id"] for d in ours_moved] == ids
    # Byte for byte what Celery's republish puts there: body, headers, properties, priority.
    assert [_essentials(d) for d in ours_moved] == [_essentials(d) for d in celerys]


def test_real_workers_on_dest_run_the_moved_tasks(
    amqp_ns: BrokerNamespace, redis_ns: BrokerNamespace
) -> None:
    ids = send(amqp_ns.url, 5)
    ours = tool("aiocelerymon", "migrate", "-a", amqp_ns.url, redis_ns.url)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.count("Migrating task") == 5
    assert drain(amqp_ns.url) == []  # -a: moved
    backend = redis_ns.url
    config = {"result_backend": backend}
    with celery_worker(redis_ns.url, "migrated@interop", config=config, events=False, pool="solo"):

        async def results() -> list[Any]:
            async with Results(ResultSettings(result_backend=backend)) as r:
                return [(await _fetch(r, task_id, DEADLINE)).result for task_id in ids]

        assert asyncio.run(results()) == [2 * n for n in range(5)]
