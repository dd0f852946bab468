"""``client.events``: receivers, streams and dispatchers bound to one client's transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from aiocelerymon.events.dispatcher import EventDispatcher
from aiocelerymon.events.receiver import EventReceiver, EventSettings, Handler
from aiocelerymon.wire import names
from aiocelerymon.wire.clock import LamportClock

if TYPE_CHECKING:
    from aiocelerymon.transports import Transport

__all__ = ["Events"]


class Events:
    """Celery's ``app.events``, async: ``receiver()``, ``stream()``, ``dispatcher()``."""

    def __init__(
        self,
        transport: Transport,
        settings: EventSettings,
        control_exchange: str = names.CONTROL_EXCHANGE,
        clock: LamportClock | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.control_exchange = control_exchange
        #: One Lamport clock per client, as Celery's ``app.clock`` (the mailbox's too).
        self.clock = clock if clock is not None else LamportClock()

    def receiver(
        self,
        handlers: Mapping[str, Handler] | None = None,
        node_id: str | None = None,
        routing_key: str = "#",
    ) -> EventReceiver:
        """A receiver on queue ``<event_queue_prefix>.<node_id>`` (a uuid4 if None)."""
        return EventReceiver(
            self.transport,
            self.settings,
            handlers=handlers,
            node_id=node_id,
            routing_key=routing_key,
            control_exchange=self.control_exchange,
            clock=self.clock,
        )

    async def stream(
        self,
        wakeup: bool = True,
        *,
        limit: int | None = None,
        timeout: float | None = None,
        node_id: str | None = None,
        routing_key: str = "#",
        gaps: bool = False,
    ) -> AsyncIterator[Any]:
        """Yield processed event dicts (and :class:`StreamGap` markers with ``gaps=True``)."""
        receiver = self.receiver(node_id=node_id, routing_key=routing_key)
        async for item in receiver.itercapture(
            limit=limit, timeout=timeout, wakeup=wakeup, gaps=gaps
        ):
            yield item

    def dispatcher(self, hostname: str | None = None, **kwargs: Any) -> EventDispatcher:
        """A dispatcher sending events as ``hostname`` (see :class:`EventDispatcher`)."""
        return EventDispatcher(self.transport, self.settings, hostname, clock=self.clock, **kwargs)
