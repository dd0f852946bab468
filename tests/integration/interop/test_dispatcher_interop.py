"""Celery's own Receiver + State, fed by our dispatcher, see what a real worker would show.

A real worker runs ``add(2, 2)`` and Celery's receiver records its events; then our
dispatcher sends the same task's lifecycle as an async service and a second Celery receiver
records those. Both Celery States must show the same task fields and a live worker.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import aiocelerymon
from aiocelerymon.testing import BrokerNamespace
from tests.support.celery_worker import celery_worker

pytestmark = [pytest.mark.integration, pytest.mark.interop]

APP = "tests.integration.celery_app"
DEADLINE = 30.0


class CeleryMonitor:
    """Celery's Receiver + State in a thread, as Flower and ``celery events`` run them."""

    def __init__(self, url: str) -> None:
        from celery import Celery
        from celery.events.state import State

        self.app = Celery("monitor", broker=url)
        self.state = State()
        self.seen: dict[str, threading.Event] = {}
        self._recv: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.state.event(event)
        key = event.get("uuid") or event.get("hostname")
        self.seen.setdefault(f"{key}:{event['type']}", threading.Event()).set()

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self._recv = self.app.events.Receiver(conn, handlers={"*": self._on_event})
            # Celery's consumer loop wakes every second to check should_stop.
            self._recv.capture(limit=None, timeout=None, wakeup=False)

    def event(self, key: str) -> threading.Event:
        return self.seen.setdefault(key, threading.Event())

    async def wait(self, key: str, poke: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Wait until ``key`` was seen; ``poke`` re-sends while the receiver may be starting."""
        async with asyncio.timeout(DEADLINE):
            while not await asyncio.to_thread(self.event(key).wait, 0.3):
                if poke is not None:
                    await poke()

    def __enter__(self) -> CeleryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._recv is not None:
            self._recv.should_stop = True
        self._thread.join(10)
        self.app.close()


@pytest.fixture
def url(aiocelerymon_broker: BrokerNamespace) -> str:
    """A vhost / database of this test's own, on RabbitMQ and on Redis (the plugin's)."""
    return aiocelerymon_broker.url


@pytest.fixture
def monitors(url: str) -> Iterator[Callable[[], CeleryMonitor]]:
    made: list[CeleryMonitor] = []

    def make() -> CeleryMonitor:
        m = CeleryMonitor(url).__enter__()
        made.append(m)
        return m

    yield make
    for m in made:
        m.__exit__()


def _view(monitor: CeleryMonitor, task_id: str, hostname: str) -> dict[str, Any]:
    task = monitor.state.tasks[task_id]
    worker = monitor.state.workers[hostname]
    return {
        "state": task.state,
        "name": task.name,
        "result": task.result,
        "args": task.args,
        "ready": task.ready,
        "has_times": (
            task.received is not None,
            task.started is not None,
            task.succeeded is not None,
        ),
        "worker": task.worker.hostname,
        "worker_alive": worker.alive,
        "worker_fields": sorted(
            k
            for k in (
                "freq",
                "active",
                "processed",
                "loadavg",
                "sw_ident",
                "sw_ver",
                "sw_sys",
                "pid",
            )
            if getattr(worker, k, None) is not None
        ),
        "by_type": [u for u, _ in monitor.state.tasks_by_type(task.name)],
        "types": monitor.state.task_types(),
    }


async def test_our_dispatcher_looks_like_a_worker_to_celery(url, monitors) -> None:
    # 1. A real worker, seen by Celery's monitor.
    real = monitors()
    with celery_worker(url, f"real.{uuid.uuid4().hex[:6]}@interop") as worker:
        await real.wait(f"{worker.hostname}:worker-online")
        from celery import Celery

        app = Celery("sender", broker=url)
        task_id = await asyncio.to_thread(lambda: app.send_task(f"{APP}.add", (2, 2)).id)
        app.close()
        await real.wait(f"{task_id}:task-succeeded")
        expected = _view(real, task_id, worker.hostname)

    # 2. Our dispatcher sends the same lifecycle as an async service.
    ours = monitors()
    hostname = f"svc.{uuid.uuid4().hex[:6]}@interop"
    async with aiocelerymon.Client(url) as client:
        dispatcher = client.events.dispatcher(hostname, freq=2.0)
        await dispatcher.start()
        try:
            await ours.wait(
                f"{hostname}:worker-heartbeat",
                poke=lambda: dispatcher.send("worker-heartbeat", **dispatcher._worker_fields()),
            )
            our_id = str(uuid.uuid4())
            common = {"uuid": our_id}
            await dispatcher.send(
                "task-received",
                name=f"{APP}.add",
                args="(2, 2)",
                kwargs="{}",
                root_id=our_id,
                parent_id=None,
                retries=0,
                eta=None,
                expires=None,
                **common,
            )
            await dispatcher.send("task-started", **common)
            await dispatcher.send("task-succeeded", result="4", runtime=0.001, **common)
            await ours.wait(f"{our_id}:task-succeeded")
            got = _view(ours, our_id, hostname)
        finally:
            await dispatcher.aclose()

    for view in (expected, got):
        view["worker"] = "<worker>"
        view["by_type"] = len(view["by_type"])
    assert got == expected
