"""The Monitor: one event receiver, one State, listeners and a fan-out hub.

Every app (the terminal monitor, the web server, the metrics exporter) reads the cluster from
one Monitor, so a process subscribes to the event exchange once whatever it serves. Per event,
on the ingestion path and in this order: the receiver's Celery processing, ``State.event``,
each listener (synchronous, cheap: counters), then the hub offers the event to subscribers
(bounded queues, never awaited). Nothing on that path awaits a consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiocelerymon.events import EventReceiver, State
from aiocelerymon.pipeline.hub import DEFAULT_MAXSIZE, Filter, Hub, Subscriber

if TYPE_CHECKING:
    from aiocelerymon.client import Client

__all__ = ["Listener", "Monitor", "MonitorStats"]

log = logging.getLogger("aiocelerymon.pipeline")

Event = dict[str, Any]
#: ``fn(event, state)``: called synchronously for every event after the State applied it.
Listener = Callable[[Event, State], object]

#: Flower's default ``max_workers`` / ``max_tasks`` (its ``--max-workers``/``--max-tasks``).
MAX_WORKERS = 5000
MAX_TASKS = 100_000


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """Ingestion health, a snapshot (``monitor.stats``)."""

    #: Events the State applied.
    events: int
    #: Messages that could not be decoded, or events without the fields Celery's receiver needs.
    malformed: int
    #: Events the State refused (its merge rules raised); skipped, as malformed ones.
    rejected: int
    #: Reconnects of the event subscription (events published meanwhile are lost).
    gaps: int
    #: Listener calls that raised.
    listener_errors: int
    #: ``local_received - timestamp`` of the last event, in seconds (None before the first).
    last_event_lag: float | None
    #: ``time.time()`` when the last event arrived (None before the first).
    last_event_at: float | None
    #: Live push subscribers, events queued for them, and events dropped because one lagged.
    subscribers: int
    queued: int
    missed: int
    #: Workers dropped by ``purge_offline_workers``.
    purged_workers: int
    #: ``enable_events`` casts sent (``enable_events=True``).
    enable_events_sent: int
    #: Redis pub/sub cut-offs, if the transport reports them (None otherwise).
    redis_cutoffs: int | None
    #: Whether the event subscription is live.
    ready: bool

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Monitor:
    """Ingests ``client``'s event stream into one :class:`State` for many consumers.

    Args:
        client: the connection; the monitor does not close it.
        max_tasks, max_workers: the State's bounds (Flower's defaults).
        purge_offline_workers: drop workers offline for longer than this many seconds
            (Flower's ``--purge_offline_workers``); None keeps them.
        enable_events: cast ``enable_events`` once at start and once to each newly seen worker
            that has sent no task event yet (never periodically, unlike Flower's 5 s loop).
        node_id: the event queue's id (``celeryev.<node_id>``); a uuid4 if None.
        wakeup: cast ``heartbeat`` once subscribed, so workers show up at once (as Celery).
        retry: wait for an unreachable broker under the client's retry policy instead of
            failing at start (as ``celery events`` does).
    """

    def __init__(
        self,
        client: Client,
        *,
        max_tasks: int = MAX_TASKS,
        max_workers: int = MAX_WORKERS,
        purge_offline_workers: float | None = None,
        enable_events: bool = False,
        node_id: str | None = None,
        wakeup: bool = True,
        retry: bool = True,
        state: State | None = None,
    ) -> None:
        for name, value in (("max_tasks", max_tasks), ("max_workers", max_workers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if purge_offline_workers is not None and not purge_offline_workers > 0:
            raise ValueError(
                f"purge_offline_workers must be a positive number of seconds, "
                f"not {purge_offline_workers!r}"
            )
        self.client = client
        self.state = (
            state
            if state is not None
            else State(max_tasks_in_memory=max_tasks, max_workers_in_memory=max_workers)
        )
        self.hub = Hub()
        self.purge_offline_workers = purge_offline_workers
        self.enable_events = enable_events
        self.wakeup = wakeup
        self.retry = retry
        self.receiver: EventReceiver = client.events.receiver(
            handlers={"*": self._ingest}, node_id=node_id
        )
        self._listeners: list[Listener] = []
        self.listener_errors = 0
        self.purged_workers = 0
        self.enable_events_sent = 0
        self._last_lag: float | None = None
        self._last_at: float | None = None
        #: Hostnames that were asked to enable events, or showed they send task events.
        self._events_on: set[Any] = set()
        #: ``time.time()`` a worker was last seen going offline (for the purge).
        self._offline_since: dict[Any, float] = {}
        #: Workers seen while the start broadcast of ``enable_events`` awaits its replies.
        self._start_pending: set[str] | None = None
        #: How long the start broadcast waits for replies (early finish is not possible: the
        #: set of workers is not known yet).
        self.enable_events_timeout = 1.0
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._arrived = asyncio.Event()
        self._started = False

    # -- consumers -------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call ``fn(event, state)`` for every event; returns a function that removes it."""
        self._listeners.append(fn)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(fn)

        return remove

    def subscribe(self, maxsize: int = DEFAULT_MAXSIZE, filter: Filter | None = None) -> Subscriber:
        """A bounded subscriber queue of events (see :class:`~aiocelerymon.pipeline.Subscriber`)."""
        return self.hub.subscribe(maxsize, filter)

    @property
    def ready(self) -> asyncio.Event:
        """Set once the event subscription is live: events published after it are ingested."""
        return self.receiver.ready

    @property
    def stats(self) -> MonitorStats:
        recv = self.receiver
        hub = self.hub.stats()
        cutoffs = getattr(self.client.transport, "pubsub_cutoffs", None)
        return MonitorStats(
            events=recv.event_count,
            malformed=recv.malformed,
            rejected=recv.handler_errors,
            gaps=recv.gaps,
            listener_errors=self.listener_errors,
            last_event_lag=self._last_lag,
            last_event_at=self._last_at,
            subscribers=hub["subscribers"],
            queued=hub["queued"],
            missed=hub["missed"],
            purged_workers=self.purged_workers,
            enable_events_sent=self.enable_events_sent,
            redis_cutoffs=cutoffs if isinstance(cutoffs, int) else None,
            ready=recv.ready.is_set(),
        )

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked after each event or cast."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._arrived.clear()
                if self._task is not None and self._task.done():
                    self._task.result()  # ingestion failed: raise its error
                    raise RuntimeError("the monitor stopped")
                await self._arrived.wait()

    # -- ingestion ---------------------------------------------------------------------------

    def _ingest(self, event: Event) -> None:
        """The receiver's handler: State, listeners, hub. Synchronous by design."""
        state = self.state
        state.event(event)  # raises on events Celery's State refuses: the receiver counts it
        received = event.get("local_received")
        timestamp = event.get("timestamp")
        self._last_at = received
        if received is not None and timestamp is not None:
            with contextlib.suppress(TypeError):
                self._last_lag = received - timestamp
        if self.enable_events or self.purge_offline_workers is not None:
            self._track_worker(event)
        for fn in self._listeners:
            try:
                fn(event, state)
            except Exception as exc:
                self.listener_errors += 1
                if self.listener_errors <= 10 or self.listener_errors % 1000 == 0:
                    log.warning(
                        "event listener %r failed (%d so far): %r",
                        fn,
                        self.listener_errors,
                        exc,
                        exc_info=self.listener_errors <= 3,
                    )
        self.hub.publish(event, state)
        self._arrived.set()

    def _track_worker(self, event: Event) -> None:
        kind = event.get("type")
        host = event.get("hostname")
        if not isinstance(kind, str) or not isinstance(host, str):
            return
        if kind == "worker-offline":
            self._offline_since[host] = time.time()
            self._events_on.discard(host)  # a restarted worker starts with its own -E setting
            return
        if kind.startswith("task-"):
            if kind != "task-sent":  # task-sent comes from a client, not the worker
                self._offline_since.pop(host, None)
                self._events_on.add(host)  # it sends task events already: nothing to ask
            return
        self._offline_since.pop(host, None)
        if not self.enable_events or host in self._events_on:
            return
        if self._start_pending is not None:
            self._start_pending.add(host)  # the start broadcast may be reaching it right now
            return
        # A worker not asked yet that has sent no task event: ask it, once.
        self._events_on.add(host)
        self._spawn(self._cast_enable_events([host]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cast_enable_events(self, destination: list[str]) -> None:
        try:
            await self.client.control.enable_events(destination=destination)
            self.enable_events_sent += 1
        except Exception as exc:  # retried on the worker's next sight
            self._events_on.difference_update(destination)
            log.warning("could not cast enable_events to %s: %s", ", ".join(destination), exc)
        self._arrived.set()

    async def _enable_events_at_start(self) -> None:
        """One broadcast; the nodes that answer it are done, the others seen meanwhile get one."""
        await self.receiver.ready.wait()
        answered: set[str] = set()
        try:
            replies = await self.client.control.enable_events(
                reply=True, timeout=self.enable_events_timeout
            )
            self.enable_events_sent += 1
            answered = {node for reply in replies or () for node in reply}
        except Exception as exc:
            log.warning("could not broadcast enable_events: %s", exc)
        pending, self._start_pending = self._start_pending or set(), None
        self._events_on.update(answered)
        for host in sorted(pending - self._events_on):
            self._events_on.add(host)
            self._spawn(self._cast_enable_events([host]))
        self._arrived.set()

    def purge(self, now: float | None = None) -> list[Any]:
        """Drop workers offline for longer than ``purge_offline_workers``; returns their names."""
        window = self.purge_offline_workers
        if window is None:
            return []
        now = time.time() if now is None else now
        gone = []
        for name, worker in list(self.state.workers.items()):
            if worker.alive:
                continue
            since = self._offline_since.get(name)
            if since is None:
                since = worker.heartbeat_expires if worker.heartbeats else None
            if since is None:
                # Never heard a heartbeat (known from task events only): start the clock now.
                self._offline_since[name] = now
                continue
            if now - since > window:
                gone.append(name)
        for name in gone:
            self.state.workers.pop(name, None)
            self._offline_since.pop(name, None)
            self._events_on.discard(name)
        self.purged_workers += len(gone)
        return gone

    async def _purge_loop(self, window: float) -> None:
        interval = min(max(window / 4, 0.5), 30.0)
        while True:
            await asyncio.sleep(interval)
            self.purge()

    async def _run(self) -> None:
        if self.purge_offline_workers is not None:
            self._spawn(self._purge_loop(self.purge_offline_workers))
        await self.client.connect(retry=self.retry)
        if self.enable_events:
            self._start_pending = set()
            self._spawn(self._enable_events_at_start())
        try:
            await self.receiver.capture(wakeup=self.wakeup)
        finally:
            self._arrived.set()

    # -- life --------------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Start ingestion as a task; returns once the event subscription is live (with
        ``wait``; otherwise at once, and :attr:`ready` tells when)."""
        if self._started:
            raise RuntimeError("a Monitor starts once")
        self._started = True
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="aiocelerymon-monitor"
        )
        if not wait:
            return
        waiter = asyncio.ensure_future(self.receiver.ready.wait())
        try:
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._task.done():
            self._task.result()  # raise what stopped it

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(self) -> None:
        """Wait until ingestion ends (it does only on error or :meth:`aclose`); re-raise errors."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """Stop ingestion (the event queue is deleted) and end every subscription."""
        tasks = [t for t in (self._task, *self._background) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.hub.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.state
        return (
            f"<Monitor {self.client.transport.url.redacted()} events={self.receiver.event_count} "
            f"workers={len(s.workers)} tasks={len(s.tasks)}>"
        )
