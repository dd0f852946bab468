"""Awaitable helpers for tests against Celery clusters: events, task states, workers.

Every wait has a deadline; a wait that runs out raises :class:`WaitTimeoutError` (an
``AssertionError``, so pytest reports it as a failed assertion) with what was seen so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from aiocelerymon.client import Client
from aiocelerymon.control.node import Node
from aiocelerymon.events.state import READY_STATES, State, Task

__all__ = [
    "DEFAULT_TIMEOUT",
    "EventLog",
    "FakeWorker",
    "WaitTimeoutError",
    "collect_events",
    "wait_for_task_state",
    "wait_for_workers",
]

#: Seconds any helper waits unless told otherwise.
DEFAULT_TIMEOUT = 30.0


class WaitTimeoutError(AssertionError):
    """A wait ran out of time; the message says what was awaited and what was seen."""


class EventLog:
    """The events received during a :func:`collect_events` block, in arrival order.

    ``state`` is an :class:`aiocelerymon.State` fed with the same events.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.state = State()
        self._changed = asyncio.Event()

    def _add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.state.event(event)
        self._changed.set()

    def for_task(self, task_id: str) -> list[dict[str, Any]]:
        """The events about task ``task_id``."""
        return [ev for ev in self.events if ev.get("uuid") == task_id]

    def types(self, task_id: str | None = None) -> list[str]:
        """The event types received (about ``task_id`` only, if given)."""
        events = self.events if task_id is None else self.for_task(task_id)
        return [str(ev.get("type")) for ev in events]

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "a matching event",
    ) -> dict[str, Any]:
        """The first event (received so far or later) for which ``predicate`` is true."""
        seen = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for event in self.events[seen:]:
                        if predicate(event):
                            return event
                    seen = len(self.events)
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise WaitTimeoutError(
                f"no {what} within {timeout:g}s; {len(self.events)} events seen: "
                f"{_summary(self.events)}"
            ) from None

    async def wait_for_task_state(
        self, task_id: str, state: str = "SUCCESS", *, timeout: float = DEFAULT_TIMEOUT
    ) -> Task:
        """The task once its events put it in ``state`` (``SUCCESS``, ``FAILURE``, ``STARTED``...).

        Fails at once if the task finished in another state: it will not change again.
        """

        def reached() -> Task | None:
            task = self.state.tasks.get(task_id)
            if task is None:
                return None
            if task.state == state:
                return task
            if task.state in READY_STATES and state in READY_STATES:
                raise WaitTimeoutError(
                    f"task {task_id} ended in {task.state}, not {state}; its events: "
                    f"{self.types(task_id)}"
                )
            return None

        try:
            async with asyncio.timeout(timeout):
                while (task := reached()) is None:
                    self._changed.clear()
                    await self._changed.wait()
                return task
        except TimeoutError:
            current = self.state.tasks.get(task_id)
            raise WaitTimeoutError(
                f"task {task_id} not {state} within {timeout:g}s "
                f"(state: {current.state if current else 'never seen'}); its events: "
                f"{self.types(task_id)}; {len(self.events)} events in all"
            ) from None

    async def wait_for_workers(
        self, count: int = 1, *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[str]:
        """The hostnames of ``count`` or more workers whose events show them alive."""

        def alive() -> list[str]:
            return sorted(name for name, w in self.state.workers.items() if w.alive)

        try:
            async with asyncio.timeout(timeout):
                while len(names := alive()) < count:
                    self._changed.clear()
                    await self._changed.wait()
                return names
        except TimeoutError:
            raise WaitTimeoutError(
                f"{count} workers not online within {timeout:g}s; alive: {alive()}"
            ) from None


def _summary(events: Sequence[Mapping[str, Any]], limit: int = 30) -> str:
    shown = [f"{ev.get('type')}({ev.get('uuid') or ev.get('hostname')})" for ev in events[-limit:]]
    more = f"... {len(events) - limit} earlier, " if len(events) > limit else ""
    return more + ", ".join(shown)


@contextlib.asynccontextmanager
async def collect_events(
    client: Client, *, wakeup: bool = True, timeout: float = DEFAULT_TIMEOUT
) -> AsyncIterator[EventLog]:
    """Receive every event while the block runs; yields once the subscription is live.

    Events published after entering are never missed: send the tasks inside the block.
    ``wakeup`` asks the workers for a heartbeat at once, as Celery's monitors do.
    """
    log = EventLog()
    receiver = client.events.receiver()

    async def receive() -> None:
        async for event in receiver.itercapture(wakeup=wakeup):
            if isinstance(event, dict):  # not a StreamGap (none without gaps=True)
                log._add(dict(event))

    task = asyncio.get_running_loop().create_task(receive(), name="aiocelerymon-collect-events")
    ready = asyncio.get_running_loop().create_task(receiver.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # the subscription failed: raise why
            raise RuntimeError("the event receiver stopped before it was ready")
        if not done:
            raise WaitTimeoutError(f"event subscription not live within {timeout:g}s")
        yield log
    finally:
        for pending in (ready, task):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


async def wait_for_task_state(
    events: EventLog, task_id: str, state: str = "SUCCESS", *, timeout: float = DEFAULT_TIMEOUT
) -> Task:
    """:meth:`EventLog.wait_for_task_state`, as a function."""
    return await events.wait_for_task_state(task_id, state, timeout=timeout)


async def wait_for_workers(
    client: Client,
    count: int | Collection[str] = 1,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    ping_timeout: float = 1.0,
) -> list[str]:
    """Ping until ``count`` workers (or every named one) answer; their names, sorted.

    A worker logs ``ready.`` before its pidbox consumer is certain to be up (on Redis the
    PSUBSCRIBE can land just after), so a ping is the only proof that it will hear commands.
    """
    wanted = None if isinstance(count, int) else set(count)
    destination = sorted(wanted) if wanted else None
    answered: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            while True:
                replies = await client.control.ping(destination=destination, timeout=ping_timeout)
                answered |= {node for reply in replies for node in reply}
                if wanted is not None and answered >= wanted:
                    return sorted(answered)
                if wanted is None and isinstance(count, int) and len(answered) >= count:
                    return sorted(answered)
    except TimeoutError:
        target = sorted(wanted) if wanted is not None else f"{count} workers"
        raise WaitTimeoutError(
            f"{target} did not answer ping within {timeout:g}s; answered: {sorted(answered)}"
        ) from None


class FakeWorker:
    """A worker without Celery: answers remote control and sends worker and task events.

    Built on :class:`aiocelerymon.Node` (pidbox commands: ``ping``, ``stats``, ``registered``,
    ``active``...) and ``client.events.dispatcher`` (``worker-online``, heartbeats every
    ``freq`` seconds, ``worker-offline``). :meth:`run_task` sends a task's lifecycle the way a
    worker with ``-E`` does, so monitors under test see a task run. Use it as an async context
    manager.
    """

    def __init__(
        self,
        client: Client,
        hostname: str | None = None,
        *,
        registered: Collection[str] | Mapping[str, Mapping[str, Any]] = (),
        freq: float = 2.0,
        **node_options: Any,
    ) -> None:
        self.hostname = hostname or f"fake-{uuid.uuid4().hex[:8]}@aiocelerymon"
        self._active: dict[str, dict[str, Any]] = {}
        self.processed = 0
        self.node = Node(
            client,
            self.hostname,
            registered=registered,
            active=lambda: list(self._active.values()),
            **node_options,
        )
        self.dispatcher = client.events.dispatcher(
            self.hostname,
            freq=freq,
            worker_stats=lambda: {"active": len(self._active), "processed": self.processed},
        )
        self._pids = itertools.count(os.getpid())

    async def __aenter__(self) -> Self:
        await self.node.start()
        try:
            await self.dispatcher.start()
        except BaseException:
            await self.node.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.dispatcher.aclose()
        finally:
            await self.node.aclose()

    async def send_task_event(self, type: str, task_id: str, **fields: Any) -> None:
        """Send one ``task-*`` event about ``task_id`` now (unbuffered)."""
        await self.dispatcher.send(type, uuid=task_id, **fields)
        await self.dispatcher.flush()

    async def run_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        result: Any = None,
        exception: BaseException | None = None,
        task_id: str | None = None,
        started: asyncio.Event | None = None,
        finish: asyncio.Event | None = None,
    ) -> str:
        """Send ``task-received``, ``task-started``, then ``task-succeeded`` or ``task-failed``.

        Fields are formatted as Celery's worker formats them (``repr`` of args, kwargs and
        result). While ``finish`` is given and not set, the task stays active (``started`` is
        set once it is). Returns the task id.
        """
        task_id = task_id or str(uuid.uuid4())
        kwargs = dict(kwargs or {})
        await self.send_task_event(
            "task-received",
            task_id,
            name=name,
            args=repr(tuple(args)),
            kwargs=repr(kwargs),
            retries=0,
            eta=None,
            expires=None,
            root_id=task_id,
            parent_id=None,
        )
        pid = next(self._pids)
        self._active[task_id] = {
            "id": task_id,
            "name": name,
            "args": list(args),
            "kwargs": kwargs,
            "hostname": self.hostname,
            "worker_pid": pid,
        }
        loop = asyncio.get_running_loop()
        begun = loop.time()
        try:
            await self.send_task_event("task-started", task_id, pid=pid)
            if started is not None:
                started.set()
            if finish is not None:
                await finish.wait()
            runtime = loop.time() - begun
            if exception is None:
                await self.send_task_event(
                    "task-succeeded", task_id, result=repr(result), runtime=runtime
                )
            else:
                await self.send_task_event(
                    "task-failed",
                    task_id,
                    exception=repr(exception),
                    traceback="".join(traceback.format_exception_only(exception)),
                )
        finally:
            del self._active[task_id]
            self.processed += 1
        return task_id
