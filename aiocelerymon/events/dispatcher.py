"""The event dispatcher: send task-* and worker-* events exactly as a Celery worker does.

Wire shape (celery/events/dispatcher.py, celery/worker/heartbeat.py): routing key = the type
with ``-`` -> ``.``, header ``hostname``, transient delivery. Like a worker on an event loop,
``task`` events are buffered and flushed as one ``task.multi`` list on the next loop tick or
when 24 have accumulated (Celery's ``buffer_limit``); ``worker`` events go out one by one.
:meth:`EventDispatcher.start` sends ``worker-online`` and a ``worker-heartbeat`` every
``freq`` seconds; :meth:`aclose` sends ``worker-offline``. Flower and ``celery events`` then
show the service as a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiocelerymon._version import __version__
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.entities import Message
from aiocelerymon.wire.event import event as build_event

if TYPE_CHECKING:
    from aiocelerymon.events.receiver import EventSettings
    from aiocelerymon.transports import Transport

__all__ = ["EventDispatcher", "load_average"]

log = logging.getLogger("aiocelerymon.events")

#: Celery's dispatcher flushes a buffered group at this many events.
BUFFER_LIMIT = 24
#: ``worker-*`` software fields; ``sw_ident`` tells monitors this is not a Celery worker.
SOFTWARE_INFO = {"sw_ident": "aiocelerymon", "sw_ver": __version__, "sw_sys": platform.system()}


def load_average() -> tuple[float, float, float]:
    """os.getloadavg() rounded up to 2 decimals, as Celery's heart sends it."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not available on this platform
        return (0.0, 0.0, 0.0)
    return (math.ceil(one * 100) / 100, math.ceil(five * 100) / 100, math.ceil(fifteen * 100) / 100)


class EventDispatcher:
    """Publishes events under ``hostname`` (``gen<pid>@<host>`` if not given, as Celery)."""

    def __init__(
        self,
        transport: Transport,
        settings: EventSettings,
        hostname: str | None = None,
        *,
        enabled: bool = True,
        groups: Collection[str] | None = None,
        buffer_group: Collection[str] = ("task",),
        buffer_limit: int = BUFFER_LIMIT,
        freq: float = 2.0,
        clock: LamportClock | None = None,
        worker_stats: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.hostname = hostname or names.anon_nodename()
        self.enabled = enabled
        #: Only these groups are sent when set (Celery's ``groups``; None = everything).
        self.groups = set(groups) if groups is not None else None
        self.buffer_group = set(buffer_group)
        self.buffer_limit = buffer_limit
        self.freq = freq
        self.clock = clock or LamportClock()
        #: ``active``/``processed`` for heartbeats; defaults to zeros.
        self.worker_stats = worker_stats
        self._exchange = names.event_exchange(settings.event_exchange)
        self._buffer: list[dict[str, Any]] = []
        self._flusher: asyncio.Handle | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._heart: asyncio.Task[None] | None = None

    async def send(
        self, type: str, blind: bool = False, utcoffset: float | None = None, **fields: Any
    ) -> None:
        """Send one event (buffered for ``task`` events); ``blind`` sends no clock, as Celery."""
        if not self.enabled:
            return
        group = type.partition("-")[0]
        if self.groups is not None and group not in self.groups:
            return
        ev = build_event(
            type, hostname=self.hostname, clock=None if blind else self.clock.forward(), **fields
        )
        if utcoffset is not None:
            ev["utcoffset"] = utcoffset
        if group in self.buffer_group:
            self._buffer.append(ev)
            if len(self._buffer) >= self.buffer_limit:
                await self.flush()
            elif self._flusher is None:
                # Celery flushes buffered task events on the next event-loop tick.
                self._flusher = asyncio.get_running_loop().call_soon(self._flush_soon)
            return
        await self._publish(ev, names.event_routing_key(type))

    def _flush_soon(self) -> None:
        self._flusher = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Publish buffered events now, as one ``task.multi`` list."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        await self._publish(batch, names.TASK_MULTI)

    async def _publish(self, body: dict[str, Any] | list[dict[str, Any]], routing_key: str) -> None:
        data, content_type, content_encoding = codec.encode(body, self.settings.event_serializer)
        message = Message(
            data, content_type, content_encoding, {"hostname": self.hostname}, names.TRANSIENT
        )
        await self.transport.publish(message, self._exchange, routing_key)

    # -- worker heart ------------------------------------------------------------------------

    def _worker_fields(self) -> dict[str, Any]:
        stats = dict(self.worker_stats()) if self.worker_stats else {}
        return {
            "freq": self.freq,
            "active": int(stats.get("active", 0)),
            "processed": int(stats.get("processed", 0)),
            "loadavg": load_average(),
            **SOFTWARE_INFO,
        }

    async def start(self) -> None:
        """Send ``worker-online`` and start heartbeats every ``freq`` seconds."""
        if self._heart is not None:
            return
        await self.send("worker-online", **self._worker_fields())
        self._heart = asyncio.get_running_loop().create_task(
            self._beat(), name=f"aiocelerymon-heart-{self.hostname}"
        )

    async def heartbeat(self) -> None:
        """Send a ``worker-heartbeat`` now (a worker answers the ``heartbeat`` command so)."""
        await self.send("worker-heartbeat", **self._worker_fields())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.freq)
            try:
                await self.heartbeat()
            except Exception as exc:  # a missed beat must not stop the heart
                log.warning("heartbeat of %s not sent: %r", self.hostname, exc)

    async def aclose(self) -> None:
        """Flush, stop heartbeats and send ``worker-offline`` if started."""
        heart, self._heart = self._heart, None
        if heart is not None:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
        await self.flush()
        for task in list(self._pending):
            with contextlib.suppress(Exception):
                await task
        if heart is not None:
            await self.send("worker-offline", **self._worker_fields())

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
        return f"<EventDispatcher {self.hostname} buffered={len(self._buffer)}>"
