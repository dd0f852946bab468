"""The fan-out hub: every subscriber gets the events it asked for, none can slow ingestion.

Publishing is synchronous and O(subscribers): a filter call and a ``deque.append`` each. A
subscriber whose queue is full loses what it had queued and is told so by a :class:`Lagged`
item, then receives new events again (tokio's ``broadcast`` semantics, without the ring).
Dropping the stale backlog rather than the newest events is deliberate: a consumer that lagged
must resynchronise from the State anyway, and the State is newer than anything queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from aiocelerymon.events import State

__all__ = ["EventFilter", "Filter", "Hub", "Lagged", "Subscriber"]

log = logging.getLogger("aiocelerymon.pipeline")

Event = dict[str, Any]
#: ``filter(event, state) -> bool``, called on the ingestion path after State applied the event.
Filter = Callable[[Event, "State"], bool]

#: Default queue bound of a subscriber, in events.
DEFAULT_MAXSIZE = 10_000


@dataclass(frozen=True, slots=True)
class Lagged:
    """The subscriber fell behind: ``missed`` events were dropped. Resync from the State."""

    missed: int


def _matcher(patterns: Collection[str] | None) -> Callable[[Any], bool] | None:
    """Exact names, or shell globs (``task-*``, ``proj.*``), case-sensitive as Celery names."""
    if not patterns:
        return None
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if p not in exact]
    if not globs:
        return lambda value: value in exact
    rx = re.compile("|".join(fnmatch.translate(p) for p in globs))
    return lambda value: value in exact or (isinstance(value, str) and rx.match(value) is not None)


class EventFilter:
    """Filter by event type, worker hostname, task name and task state (each a set of globs).

    Dimensions combine with AND, values within one with OR. ``task_names`` and ``states``
    describe tasks, so with either set only task events pass; the state is the task's state in
    the State after the event (what a page shows), not the event type.
    """

    __slots__ = ("_names", "_states", "_types", "_workers", "spec")

    def __init__(
        self,
        *,
        types: Collection[str] | None = None,
        workers: Collection[str] | None = None,
        task_names: Collection[str] | None = None,
        states: Collection[str] | None = None,
    ) -> None:
        self.spec: dict[str, frozenset[str]] = {
            k: frozenset(v)
            for k, v in (
                ("types", types),
                ("workers", workers),
                ("task_names", task_names),
                ("states", states),
            )
            if v
        }
        self._types = _matcher(types)
        self._workers = _matcher(workers)
        self._names = _matcher(task_names)
        self._states = _matcher({s.upper() for s in states} if states else None)

    @property
    def empty(self) -> bool:
        return not self.spec

    def __call__(self, event: Event, state: State) -> bool:
        kind = event.get("type")
        if self._types is not None and not self._types(kind):
            return False
        if self._workers is not None and not self._workers(event.get("hostname")):
            return False
        if self._names is None and self._states is None:
            return True
        if not isinstance(kind, str) or not kind.startswith("task-"):
            return False
        task = state.tasks.data.get(event.get("uuid"))
        if self._names is not None and not self._names(
            task.name if task is not None else event.get("name")
        ):
            return False
        return self._states is None or (task is not None and self._states(task.state))

    def task_matches(self, task: Any) -> bool:
        """Whether a State task passes the worker, name and state filters (for resyncs)."""
        if self._workers is not None and not self._workers(getattr(task.worker, "hostname", None)):
            return False
        if self._names is not None and not self._names(task.name):
            return False
        return self._states is None or self._states(task.state)

    def __repr__(self) -> str:
        spec = " ".join(f"{k}={sorted(v)}" for k, v in self.spec.items())
        return f"<EventFilter {spec or 'all'}>"


class Subscriber:
    """A bounded queue of events (and :class:`Lagged` notices), as an async iterator.

    Use it as ``with monitor.subscribe() as sub: async for item in sub: ...`` (``async with``
    works too); leaving the block (or :meth:`close`) unsubscribes. Iteration ends when the
    monitor stops. Event dicts are shared with every other consumer: read, never modify them.
    """

    def __init__(self, hub: Hub, maxsize: int, filter: Filter | None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        self.hub = hub
        self.maxsize = maxsize
        self.filter = filter
        #: Events dropped for this subscriber because its queue was full.
        self.missed = 0
        #: Times this subscriber lagged.
        self.lags = 0
        #: Events delivered to the queue.
        self.delivered = 0
        self._queue: deque[Event | Lagged] = deque()
        self._pending_missed = 0
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def _offer(self, event: Event) -> None:
        """Called by the hub on the ingestion path: never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self.maxsize:
            # Drop the stale backlog; the next item the consumer sees is the Lagged notice.
            dropped = sum(1 for item in queue if not isinstance(item, Lagged))
            self._pending_missed += dropped
            self.missed += dropped
            self.lags += 1
            queue.clear()
            queue.append(Lagged(self._pending_missed))
        queue.append(event)
        self.delivered += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def qsize(self) -> int:
        return len(self._queue)

    def get_nowait(self) -> Event | Lagged | None:
        """The next item, or None if nothing is queued."""
        if not self._queue:
            return None
        item = self._queue.popleft()
        if isinstance(item, Lagged):
            self._pending_missed = 0
        return item

    async def get(self) -> Event | Lagged:
        """Wait for the next item; raises ``StopAsyncIteration`` once closed and drained."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self.closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event | Lagged:
        return await self.get()

    def close(self) -> None:
        """Unsubscribe; queued items can still be read."""
        self.hub.unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Subscriber queued={len(self._queue)}/{self.maxsize} missed={self.missed}"
            f"{' closed' if self.closed else ''}>"
        )


class Hub:
    """Fan-out of ingested events to :class:`Subscriber` queues."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        #: Filters that raised (the event is then not delivered to that subscriber).
        self.filter_errors = 0
        self.closed = False

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return tuple(self._subscribers)

    def subscribe(self, maxsize: int = DEFAULT_MAXSIZE, filter: Filter | None = None) -> Subscriber:
        sub = Subscriber(self, maxsize, filter)
        if self.closed:
            sub._end()
        else:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)
        sub._end()

    def publish(self, event: Event, state: State) -> None:
        """Offer ``event`` to every subscriber whose filter takes it."""
        for sub in self._subscribers:
            check = sub.filter
            if check is not None:
                try:
                    if not check(event, state):
                        continue
                except Exception as exc:
                    self.filter_errors += 1
                    if self.filter_errors <= 10 or self.filter_errors % 1000 == 0:
                        log.warning(
                            "subscriber filter failed (%d so far): %r", self.filter_errors, exc
                        )
                    continue
            sub._offer(event)

    def close(self) -> None:
        """End every subscription (their iterators finish after draining)."""
        self.closed = True
        subs, self._subscribers = self._subscribers, []
        for sub in subs:
            sub._end()

    def stats(self) -> Mapping[str, int]:
        subs = self._subscribers
        return {
            "subscribers": len(subs),
            "queued": sum(s.qsize() for s in subs),
            "missed": sum(s.missed for s in subs),
        }
