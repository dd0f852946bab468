"""Task history on a Monitor: a writer that never gets in the way of ingestion, and warm-up.

The writer is a Monitor listener, so it sees every event. On the ingestion path it only marks
the event's task (or worker) dirty, a dict assignment, and appends the event to a bounded
log; a background task writes what is dirty every ``interval`` seconds, or as soon as
``batch_size`` rows are waiting, building each row from the State at write time. A task
changed five times between two writes is written once, with its latest fields: when the store
is slower than the stream the writes simply get bigger and fewer (coalescing), and the
receiver never waits. Memory stays bounded: at most ``max_pending`` dirty tasks (past that,
new tasks are counted in ``dropped_tasks``) and ``max_pending_events`` events of the timeline
(past that, ``dropped_events``); the State itself is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiocelerymon.events import State
from aiocelerymon.store import (
    DEFAULT_FIELD_LIMIT,
    Batch,
    EventRecord,
    Gap,
    Store,
    TaskRecord,
    WorkerRecord,
    jsonable,
    truncate,
)
from aiocelerymon.store._base import TEXT_FIELDS

if TYPE_CHECKING:
    from aiocelerymon.pipeline.monitor import Monitor

__all__ = ["History", "HistoryStats", "HistoryWriter", "StoredTask", "task_record", "warm_state"]

log = logging.getLogger("aiocelerymon.store")

#: Worker fields kept (the heartbeat list is reduced to its last beat).
WORKER_FIELDS = ("hostname", "pid", "freq", "clock", "active", "processed", "loadavg",
                 "sw_ident", "sw_ver", "sw_sys")  # fmt: skip
#: Event keys not worth a copy in the timeline (the task row has them, or they are routing).
_EVENT_SKIP = frozenset({"uuid", "local_received"})
#: Seconds between "still alive" marks while idle: a restart records the time since the last
#: mark as a gap (so a gap starts at most this long before the real stop; a clean stop marks
#: its own end).
ALIVE_INTERVAL = 5.0


def task_record(cluster: str, task: Any, limit: int = DEFAULT_FIELD_LIMIT) -> TaskRecord:
    """The row of ``task`` (a State ``Task``): every field of ``as_dict()``, the large text
    fields truncated at ``limit`` characters."""
    fields = task.as_dict()
    worker = fields.get("worker")
    if worker is not None:
        fields["worker"] = getattr(worker, "hostname", worker)
    for key in TEXT_FIELDS:
        value = fields[key]
        if value is not None and (value.__class__ is not str or len(value) > limit):
            fields[key] = truncate(value, limit)
    extra = getattr(task, "__dict__", None)
    if extra:  # fields of custom events (Celery keeps every event key as an attribute)
        for key, value in extra.items():
            if key not in fields and not key.startswith("_") and key not in _EVENT_SKIP:
                fields[key] = value
    # Not walked here: the adapter's JSON encoder (orjson, C) renders odd values as text.
    return TaskRecord(cluster, str(task.uuid), fields)


def _event_record(cluster: str, event: dict[str, Any], limit: int) -> EventRecord:
    fields = dict(event)  # a C-level copy; the two keys the row has anyway go
    fields.pop("uuid", None)
    fields.pop("local_received", None)
    for key in TEXT_FIELDS:
        value = fields.get(key)
        if value is not None and (value.__class__ is not str or len(value) > limit):
            fields[key] = truncate(value, limit)
    stamp = event.get("timestamp")
    # Not walked for odd values: the adapter's JSON encoder (orjson, C) renders them as text.
    return EventRecord(
        cluster,
        str(event.get("uuid")),
        str(event.get("type")),
        float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None,
        fields,
    )


def _worker_record(cluster: str, worker: Any) -> WorkerRecord:
    fields = {key: getattr(worker, key, None) for key in WORKER_FIELDS}
    beats = getattr(worker, "heartbeats", None) or []
    fields["heartbeat"] = beats[-1] if beats else None
    stamp = fields["heartbeat"]
    return WorkerRecord(
        cluster,
        str(worker.hostname),
        jsonable(fields),
        float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None,
    )


@dataclass(frozen=True, slots=True)
class HistoryStats:
    """The writer's health (``writer.stats``)."""

    #: Task rows, worker rows and events written; batches (transactions) committed.
    tasks_written: int
    workers_written: int
    events_written: int
    batches: int
    #: Events whose task was already waiting to be written (its row is written once).
    coalesced: int
    #: Tasks and timeline events not written because the buffers were full.
    dropped_tasks: int
    dropped_events: int
    #: Tasks waiting to be written now.
    pending: int
    write_errors: int
    #: Tasks deleted by retention.
    pruned: int
    #: Seconds the last write took.
    last_write: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class HistoryWriter:
    """Writes ``monitor``'s tasks, workers and events to ``store`` (see the module doc).

    Args:
        cluster: the name every row carries.
        interval: seconds between writes (at most; sooner once ``batch_size`` rows wait).
        batch_size: rows per transaction.
        max_pending, max_pending_events: the bounds of the buffers.
        field_limit: characters kept of args, kwargs, result, exception and traceback.
        max_age: delete tasks whose last event is older than this many seconds.
        max_count: keep at most this many tasks.
        prune_interval: seconds between retention passes.
    """

    def __init__(
        self,
        monitor: Monitor,
        store: Store,
        *,
        cluster: str,
        interval: float = 1.0,
        batch_size: int = 1000,
        max_pending: int = 200_000,
        max_pending_events: int = 100_000,
        field_limit: int = DEFAULT_FIELD_LIMIT,
        max_age: float | None = None,
        max_count: int | None = None,
        prune_interval: float = 60.0,
    ) -> None:
        for name, value in (("interval", interval), ("prune_interval", prune_interval)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        for name, value in (
            ("batch_size", batch_size),
            ("max_pending", max_pending),
            ("max_pending_events", max_pending_events),
            ("field_limit", field_limit),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if max_age is not None and not max_age > 0:
            raise ValueError(f"max_age must be a positive number of seconds, not {max_age!r}")
        if max_count is not None and (not isinstance(max_count, int) or max_count < 1):
            raise ValueError(f"max_count must be a positive integer, not {max_count!r}")
        self.monitor = monitor
        self.store = store
        self.cluster = cluster
        self.interval = interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.max_pending_events = max_pending_events
        self.field_limit = field_limit
        self.max_age = max_age
        self.max_count = max_count
        self.prune_interval = prune_interval
        #: Dirty tasks by uuid: the Task object itself (kept even if the State evicts it).
        self._tasks: dict[Any, Any] = {}
        self._workers: dict[Any, Any] = {}
        self._events: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._remove_listener: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.tasks_written = self.workers_written = self.events_written = self.batches = 0
        self.coalesced = self.dropped_tasks = self.dropped_events = 0
        self.write_errors = self.pruned = 0
        self.last_write: float | None = None
        self._inflight = 0
        self._stopping = False
        self._alive_at = 0.0
        self._gaps: list[Gap] = []
        self._reconnects = monitor.receiver.gaps
        self._seen_at: float | None = None

    # -- the ingestion path ------------------------------------------------------------------

    def on_event(self, event: dict[str, Any], state: State) -> None:
        """The listener: mark the task or worker dirty; O(1), never awaits."""
        received = event.get("local_received")
        reconnects = self.monitor.receiver.gaps
        if reconnects != self._reconnects:
            # The subscription was re-established: events between the last one seen before
            # and this one were published while nobody listened.
            self._reconnects = reconnects
            if self._seen_at is not None and isinstance(received, (int, float)):
                self._gaps.append(Gap(self.cluster, self._seen_at, float(received), "reconnect"))
        if isinstance(received, (int, float)):
            self._seen_at = float(received)
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        if kind.startswith("task-"):
            uuid = event.get("uuid")
            task = state.tasks.data.get(uuid)
            if task is None:
                return
            pending = self._tasks
            if uuid in pending:
                self.coalesced += 1
            elif len(pending) >= self.max_pending:
                self.dropped_tasks += 1
                return
            else:
                pending[uuid] = task
            worker = task.worker  # task events create and refresh workers too
            if worker is not None:
                self._workers[worker.hostname] = worker
            if len(self._events) < self.max_pending_events:
                self._events.append(event)
            else:
                self.dropped_events += 1
            if len(pending) >= self.batch_size:
                self._wake.set()
        elif kind.startswith("worker-"):
            worker = state.workers.data.get(event.get("hostname"))
            if worker is not None:
                self._workers[worker.hostname] = worker

    @property
    def pending_tasks(self) -> list[Any]:
        """The tasks changed since their last write (fresher than their stored row)."""
        return list(self._tasks.values())

    @property
    def stats(self) -> HistoryStats:
        return HistoryStats(
            tasks_written=self.tasks_written,
            workers_written=self.workers_written,
            events_written=self.events_written,
            batches=self.batches,
            coalesced=self.coalesced,
            dropped_tasks=self.dropped_tasks,
            dropped_events=self.dropped_events,
            pending=len(self._tasks),
            write_errors=self.write_errors,
            pruned=self.pruned,
            last_write=self.last_write,
        )

    # -- the background ----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            idle = not (self._tasks or self._workers or self._events or self._gaps)
            if idle and time.time() - self._alive_at < ALIVE_INTERVAL:
                continue
            try:
                await self.flush()
            except Exception as exc:  # counted; the rows stay pending and are retried
                self.write_errors += 1
                if self.write_errors <= 10 or self.write_errors % 100 == 0:
                    log.warning("could not write task history to %s: %s", self.store.url, exc)
                await asyncio.sleep(min(self.interval * 2, 5.0))

    async def flush(self) -> None:
        """Write everything pending now, ``batch_size`` rows per transaction."""
        self._inflight += 1
        tasks, self._tasks = self._tasks, {}
        workers, self._workers = self._workers, {}
        events, self._events = self._events, deque()
        gaps, self._gaps = self._gaps, []
        cluster, limit = self.cluster, self.field_limit
        items = list(tasks.items())
        timeline: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            timeline.setdefault(str(event.get("uuid")), []).append(event)
        try:
            while True:
                start = time.perf_counter()
                chunk = items[: self.batch_size]
                batch = Batch(
                    tasks=[task_record(cluster, task, limit) for _, task in chunk],
                    workers=[_worker_record(cluster, w) for w in workers.values()],
                    gaps=gaps,
                    alive=(cluster, time.time()),
                )
                self._alive_at = batch.alive[1] if batch.alive else self._alive_at
                for uuid, _ in chunk:
                    for event in timeline.get(str(uuid), ()):
                        batch.events.append(_event_record(cluster, event, limit))
                await self.store.write(batch)
                del items[: len(chunk)]
                for uuid, _ in chunk:
                    timeline.pop(str(uuid), None)
                workers, gaps = {}, []
                self.tasks_written += len(batch.tasks)
                self.workers_written += len(batch.workers)
                self.events_written += len(batch.events)
                self.batches += 1
                self.last_write = time.perf_counter() - start
                if not items:
                    break
                await asyncio.sleep(0)  # let the loop breathe between big chunks
        except BaseException:
            # Put back what was not written, under anything newer that arrived meanwhile.
            for uuid, task in items:
                self._tasks.setdefault(uuid, task)
            for host, worker in workers.items():
                self._workers.setdefault(host, worker)
            self._gaps[:0] = gaps
            left = [event for group in timeline.values() for event in group]
            room = max(self.max_pending_events - len(self._events), 0)
            self._events.extendleft(reversed(left[:room]))
            self.dropped_events += max(len(left) - room, 0)
            raise
        finally:
            self._inflight -= 1
            self._flushed.set()

    async def prune(self) -> int:
        """One retention pass (by age, then by count)."""
        if self.max_age is None and self.max_count is None:
            return 0
        before = None if self.max_age is None else time.time() - self.max_age
        deleted = await self.store.prune(self.cluster, before=before, keep=self.max_count)
        self.pruned += deleted
        return deleted

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception as exc:
                log.warning("task history retention failed on %s: %s", self.store.url, exc)
            await asyncio.sleep(self.prune_interval)

    async def wait_flushed(self, timeout: float = 10.0) -> None:
        """Wait until nothing is pending (for tests and shutdown)."""
        async with asyncio.timeout(timeout):
            while self._tasks or self._events or self._workers or self._inflight:
                self._flushed.clear()
                self._wake.set()
                await self._flushed.wait()

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Record the downtime since the last run as a gap, then listen and write."""
        last = await self.store.last_alive(self.cluster)
        now = time.time()
        # Events sent between the last run's last mark and now were missed, however short.
        if last is not None and now > last:
            await self.store.add_gap(Gap(self.cluster, last, now, "downtime"))
        self._remove_listener = self.monitor.add_listener(self.on_event)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="aiocelerymon-history")
        self._pruner = loop.create_task(self._prune_loop(), name="aiocelerymon-retention")

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop listening, write what is pending (within ``timeout``), stop."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pruner
        try:
            async with asyncio.timeout(timeout):
                # The loop ends after the write it is in (a cancelled write would be redone).
                self._stopping = True
                self._wake.set()
                if self._task is not None:
                    with contextlib.suppress(Exception):
                        await self._task
                await self.flush()
        except Exception as exc:
            log.warning("task history: %d tasks not written at exit: %s", len(self._tasks), exc)
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            self._task = self._pruner = None


def warm_state(state: State, tasks: list[TaskRecord], workers: list[WorkerRecord]) -> int:
    """Load stored rows into ``state`` (which should be empty): workers, then ``tasks`` given
    newest first, as if their events had arrived oldest first. Returns the tasks loaded."""
    for stored in workers:
        kept = {k: v for k, v in stored.fields.items() if k in WORKER_FIELDS}
        kept.pop("hostname", None)
        beat = stored.fields.get("heartbeat")
        state.workers[stored.hostname] = state.Worker(
            stored.hostname, heartbeats=[beat] if beat else [], **kept
        )
    loaded = 0
    skip = {"uuid", "worker", "children", "root", "parent"}
    for record in reversed(tasks[: state.max_tasks_in_memory or None]):
        if record.uuid in state.tasks.data:
            continue
        fields = {k: v for k, v in record.fields.items() if k not in skip}
        task = state.Task(record.uuid, cluster_state=state, **fields)
        host = record.fields.get("worker")
        if host is not None:
            worker = state.workers.data.get(host)
            if worker is None:
                worker = state.workers[host] = state.Worker(host)
            task.worker = worker
        state.tasks[task.uuid] = task
        # Indexed as a task created by its first event would be (State._task_event).
        name = task.name
        if name is not None:
            state._seen_types.add(name)
            state.tasks_by_type[name].add(task)
            task._by_type = name
            if host is not None:
                state.tasks_by_worker[host].add(task)
                task._by_worker = host
        loaded += 1
    state.rebuild_taskheap()
    return loaded


class StoredTask:
    """A stored task read back, with a State ``Task``'s attributes (what the API reads)."""

    __slots__ = ("_fields", "uuid")

    def __init__(self, record: TaskRecord) -> None:
        self.uuid = record.uuid
        self._fields = record.fields

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._fields.get(name)

    def as_dict(self) -> dict[str, Any]:
        """``Task.as_dict()``'s keys and order (the worker is its hostname)."""
        fields = self._fields
        out = {key: fields.get(key) for key in State.Task._fields}
        out["uuid"] = self.uuid
        out["children"] = list(fields.get("children") or ())
        return out

    def __repr__(self) -> str:
        return f"<StoredTask: {self.name}({self.uuid}) {self.state}>"


@dataclass
class History:
    """A Monitor's task history: the store, the cluster name its rows carry, the writer."""

    store: Store
    cluster: str
    writer: HistoryWriter | None = None
    #: Tasks loaded into the State from the store at start.
    warmed: int = 0

    def pending(self) -> list[Any]:
        return self.writer.pending_tasks if self.writer is not None else []
