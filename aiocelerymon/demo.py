"""A simulated Celery cluster of async nodes, for ``aiocelerymon demo`` and tests.

Each :class:`DemoWorker` is a real :class:`aiocelerymon.Node` (it answers ``ping``, ``stats``,
``active``, ``registered``, ``active_queues``, ``revoke`` and ``rate_limit`` on the pidbox)
plus an event dispatcher that sends what a Celery worker sends: ``worker-online``/heartbeats
with ``active``/``processed``, and ``task-received``/``-started``/``-succeeded``/``-failed``
(with a traceback)/``-retried``/``-revoked`` for a mix of fast, slow, failing and retried
tasks. Any broker works; the demo uses the embedded one (``memory://``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiocelerymon.control import Node
from aiocelerymon.events import EventDispatcher
from aiocelerymon.wire.rate import parse_rate

if TYPE_CHECKING:
    from aiocelerymon.client import Client

__all__ = ["NODES", "TASKS", "DemoCluster", "DemoWorker", "TaskKind"]

NODES = ("alpha@demo", "beta@demo", "gamma@demo")


@dataclass(frozen=True, slots=True)
class TaskKind:
    """A task type the demo runs: how long it takes and how it may end."""

    name: str
    runtime: tuple[float, float]
    fail_rate: float = 0.0
    retry_rate: float = 0.0
    exception: str = "RuntimeError('boom')"


_SMTP_DOWN = "SMTPServerDisconnected('Connection unexpectedly closed')"
_BAD_IMAGE = "OSError('cannot identify image file')"
TASKS = (
    TaskKind("proj.tasks.add", (0.01, 0.2)),
    TaskKind("proj.tasks.send_email", (0.1, 0.8), retry_rate=0.25, exception=_SMTP_DOWN),
    TaskKind(
        "proj.tasks.divide", (0.01, 0.1), 0.3, exception="ZeroDivisionError('division by zero')"
    ),
    TaskKind("proj.tasks.resize_image", (0.5, 2.0), 0.05, exception=_BAD_IMAGE),
    TaskKind("proj.tasks.nightly_report", (3.0, 8.0)),
)


def _traceback(kind: TaskKind) -> str:
    function = kind.name.rpartition(".")[2]
    return (
        "Traceback (most recent call last):\n"
        '  File "/app/.venv/lib/python3.12/site-packages/celery/app/trace.py", line 453, '
        "in trace_task\n"
        "    R = retval = fun(*args, **kwargs)\n"
        f'  File "/app/proj/tasks.py", line 42, in {function}\n'
        "    return work(*args)\n"
        f"{kind.exception.split('(')[0]}: {kind.exception.partition('(')[2][1:-2]}\n"
    )


class DemoWorker:
    """One simulated worker: a pidbox :class:`Node` plus an :class:`EventDispatcher`."""

    def __init__(
        self,
        client: Client,
        hostname: str,
        *,
        tasks: Sequence[TaskKind] = TASKS,
        queue: str = "celery",
        rng: random.Random | None = None,
        freq: float = 2.0,
    ) -> None:
        self.hostname = hostname
        self.tasks = {kind.name: kind for kind in tasks}
        self.queue = queue
        self.rng = rng or random.Random()
        self.processed = 0
        self._running: dict[str, tuple[asyncio.Task[None], dict[str, Any]]] = {}
        #: When each task type may start next under its rate limit (monotonic seconds).
        self._next_start: dict[str, float] = {}
        self.dispatcher: EventDispatcher = client.events.dispatcher(
            hostname, freq=freq, worker_stats=self._stats
        )
        # The Node answers revoke, rate_limit, active_queues, heartbeat ... as a worker does;
        # the simulated tasks below honour what it records.
        self.node = Node(
            client,
            hostname,
            registered=lambda: {name: {} for name in self.tasks},
            active=self._active,
            stats=lambda: {"total": self._totals()},
            queues=[queue],
            pool_size=len(self.tasks),
            dispatcher=self.dispatcher,
            on_terminate=self._terminate,
            unique_check_timeout=None,
        )
        self._totals_by_name: dict[str, int] = {}

    @property
    def rate_limits(self) -> dict[str, Any]:
        """Rate limits by task name, as set with ``control rate_limit``."""
        return self.node.rate_limits

    @property
    def revoked(self) -> Any:
        """The node's revoked ids."""
        return self.node.revoked

    # -- pidbox ------------------------------------------------------------------------------

    def _stats(self) -> dict[str, int]:
        return {"active": len(self._running), "processed": self.processed}

    def _totals(self) -> dict[str, int]:
        return dict(self._totals_by_name)

    def _active(self) -> list[dict[str, Any]]:
        return [info for _, info in self._running.values()]

    def _terminate(self, task_id: str, signal: str) -> None:
        # `revoke --terminate`: cancel the running task; it reports task-revoked.
        running = self._running.get(task_id)
        if running is not None:
            running[0].cancel()

    async def _rate_limited(self, name: str) -> None:
        """Wait for the task type's rate limit (Celery's per-type token bucket, capacity 1)."""
        per_second = parse_rate(self.node.rate_limits.get(name))
        if not per_second:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_start.get(name, now))
        self._next_start[name] = start + 1.0 / per_second
        if start > now:
            await asyncio.sleep(start - now)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the mailbox and announce the worker (``worker-online``, then heartbeats)."""
        await self.node.start()
        await self.dispatcher.start()

    async def aclose(self) -> None:
        """Cancel running tasks, send ``worker-offline`` and leave the mailbox."""
        for task, _ in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*(t for t, _ in list(self._running.values())), return_exceptions=True)
        await self.dispatcher.aclose()
        await self.node.aclose()

    # -- tasks -------------------------------------------------------------------------------

    def submit(self, kind: TaskKind | None = None, task_id: str | None = None) -> str:
        """Start one task in the background; returns its id."""
        kind = kind or self.rng.choice(list(self.tasks.values()))
        task_id = task_id or str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        info = {
            "id": task_id, "name": kind.name, "args": [self.rng.randint(1, 99)], "kwargs": {},
            "type": kind.name, "hostname": self.hostname, "time_start": time.time(),
            "acknowledged": True, "worker_pid": None,
            "delivery_info": {"exchange": "", "routing_key": self.queue, "priority": 0,
                              "redelivered": False},
        }  # fmt: skip
        task = asyncio.get_running_loop().create_task(self.run_task(kind, task_id, info))
        self._running[task_id] = (task, info)
        task.add_done_callback(lambda _: self._running.pop(task_id, None))
        return task_id

    async def run_task(self, kind: TaskKind, task_id: str, info: dict[str, Any]) -> None:
        """Send one task's life as events, the way a prefork worker reports it."""
        send = self.dispatcher.send
        args = repr(tuple(info["args"]))
        retries = 0
        try:
            while True:
                # Every delivery (a retry is a new message) is a task-received, as a worker's.
                await send(
                    "task-received", uuid=task_id, name=kind.name, args=args, kwargs="{}",
                    root_id=task_id, parent_id=None, retries=retries, eta=None, expires=None,
                )  # fmt: skip
                if self.node.is_revoked(task_id):
                    # A worker discards a revoked task it receives (celery/worker/request.py).
                    await send(
                        "task-revoked", uuid=task_id, terminated=False, signum=None, expired=False
                    )
                    return
                await self._rate_limited(kind.name)
                await send("task-started", uuid=task_id)
                started = time.monotonic()
                await asyncio.sleep(self.rng.uniform(*kind.runtime))
                runtime = time.monotonic() - started
                roll = self.rng.random()
                if roll < kind.retry_rate and retries < 3:
                    retries += 1
                    await send(
                        "task-retried", uuid=task_id, exception=kind.exception,
                        traceback=_traceback(kind),
                    )  # fmt: skip
                    await asyncio.sleep(self.rng.uniform(0.2, 1.0))  # the retry countdown
                    continue
                if roll < kind.retry_rate + kind.fail_rate:
                    await send(
                        "task-failed", uuid=task_id, exception=kind.exception,
                        traceback=_traceback(kind),
                    )  # fmt: skip
                else:
                    result = repr(sum(info["args"]) * 2) if kind.name.endswith("add") else "None"
                    await send("task-succeeded", uuid=task_id, result=result, runtime=runtime)
                break
        except asyncio.CancelledError:
            # `revoke --terminate`: what the worker reports for a task it killed.
            with contextlib.suppress(Exception):
                await send("task-revoked", uuid=task_id, terminated=True, signum=15, expired=False)
            raise
        finally:
            self.processed += 1
            self._totals_by_name[kind.name] = self._totals_by_name.get(kind.name, 0) + 1


class DemoCluster:
    """A few :class:`DemoWorker` nodes sharing one client, producing tasks at ``rate``/s."""

    def __init__(
        self,
        client: Client,
        nodes: Sequence[str] = NODES,
        *,
        rate: float = 4.0,
        seed: int | None = None,
        freq: float = 2.0,
    ) -> None:
        self.client = client
        self.rate = rate
        self.rng = random.Random(seed)
        self.workers = [
            DemoWorker(client, name, rng=random.Random(self.rng.random()), freq=freq)
            for name in nodes
        ]
        self._producer: asyncio.Task[None] | None = None

    async def start(self, produce: bool = True) -> None:
        """Start every node; with ``produce``, keep submitting tasks in the background."""
        for worker in self.workers:
            await worker.start()
        if produce and self.rate > 0:
            self._producer = asyncio.get_running_loop().create_task(self._produce())

    async def _produce(self) -> None:
        while True:
            self.rng.choice(self.workers).submit()
            await asyncio.sleep(self.rng.expovariate(self.rate))

    async def aclose(self) -> None:
        """Stop producing and stop every node (each sends ``worker-offline``)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        for worker in self.workers:
            await worker.aclose()

    async def __aenter__(self) -> DemoCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
