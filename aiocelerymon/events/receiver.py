"""The event receiver: Celery's ``app.events.Receiver``, async and without a thread.

Per event it applies Celery's receiver processing (celery/events/receiver.py): the ``task-sent``
clock rule, Lamport clock adjustment, the ``utcoffset`` timestamp shift and ``local_received``;
then it calls ``handlers[type]`` or ``handlers['*']``. One message may carry one event or a
``task.multi`` list. Undecodable messages are counted and logged, never fatal. A reconnect of the
subscription (messages may have been lost) is counted in :attr:`EventReceiver.gaps` and, on
request, yielded as a :class:`StreamGap`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiocelerymon.exceptions import ProtocolError
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.event import decode_events, utcoffset
from aiocelerymon.wire.pidbox import request_body, request_message

if TYPE_CHECKING:
    from aiocelerymon.transports import Transport

__all__ = ["EventReceiver", "EventSettings", "StreamGap", "event_from_message"]

log = logging.getLogger("aiocelerymon.events")

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[Any] | Any]

#: Celery's CLIENT_CLOCK_SKEW: a ``task-sent`` clock is placed just before the receiver's.
CLIENT_CLOCK_SKEW = -1


@dataclass(frozen=True, slots=True)
class EventSettings:
    """Celery's event settings, names and defaults (None: the queue argument is not set).

    ``event_queue_exclusive`` defaults to True as in Celery 5.7. For a pipeline that must
    survive restarts on RabbitMQ, use a fixed ``node_id`` with ``event_queue_durable=True``,
    ``event_queue_exclusive=False`` (and usually ``event_queue_expires=None``).
    """

    event_exchange: str = names.EVENT_EXCHANGE
    event_queue_prefix: str = names.EVENT_QUEUE_PREFIX
    event_queue_ttl: float | None = names.EVENT_QUEUE_TTL
    event_queue_expires: float | None = names.EVENT_QUEUE_EXPIRES
    event_queue_exclusive: bool = True
    event_queue_durable: bool = False
    event_serializer: str = "json"
    accept_content: frozenset[str] = field(default=codec.DEFAULT_ACCEPT)


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Yielded by :meth:`EventReceiver.itercapture` with ``gaps=True`` after a reconnect."""

    generation: int


def event_from_message(
    body: Event, clock: LamportClock, local_offset: float | None = None
) -> tuple[str, Event]:
    """Celery's receiver processing of one event dict, in place; returns ``(type, event)``."""
    type_ = body["type"]
    if not isinstance(type_, str):
        raise TypeError(f"event type must be a string, not {type(type_).__name__}")
    if type_ == "task-sent":
        # Clients never sync their clocks, so Celery places task-sent just before ours.
        sent = body["clock"] = (clock.value or 1) + CLIENT_CLOCK_SKEW
        clock.adjust(sent)
    else:
        received = body.get("clock")
        if received is None:
            body["clock"] = clock.forward()
        else:
            clock.adjust(received)
    offset, timestamp = body.get("utcoffset"), body.get("timestamp")
    if offset is not None and timestamp is not None:
        # Celery shifts by the timezone difference (celery.utils.time.adjust_timestamp).
        here = utcoffset() if local_offset is None else local_offset
        body["timestamp"] = timestamp - (offset - here) * 3600
    body["local_received"] = time.time()
    return type_, body


class EventReceiver:
    """Receives Celery events on its own queue ``<event_queue_prefix>.<node_id>``."""

    def __init__(
        self,
        transport: Transport,
        settings: EventSettings | None = None,
        *,
        handlers: Mapping[str, Handler] | None = None,
        node_id: str | None = None,
        routing_key: str = "#",
        control_exchange: str = names.CONTROL_EXCHANGE,
        clock: LamportClock | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings or EventSettings()
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.node_id = node_id or str(uuid.uuid4())
        self.routing_key = routing_key
        self.control_exchange = control_exchange
        self.clock = clock or LamportClock()
        #: Events processed (each event of a ``task.multi`` batch counts).
        self.event_count = 0
        #: Messages that could not be decoded (logged and skipped).
        self.malformed = 0
        #: Events a handler raised on (e.g. State's merge rules refused them; logged, skipped).
        self.handler_errors = 0
        #: Reconnects of the subscription seen while receiving (events may have been lost).
        self.gaps = 0
        self._generation = 0
        self._local_offset = utcoffset()
        #: Set once the subscription is live (and workers were woken up): Celery's
        #: ``on_consume_ready`` moment. Events published after it are received.
        self.ready = asyncio.Event()

    @property
    def queue(self) -> str:
        """The receiver's queue name."""
        return names.event_queue_name(self.node_id, self.settings.event_queue_prefix)

    def _binding(self) -> Any:
        s = self.settings
        return names.event_binding(
            self.node_id,
            exchange=s.event_exchange,
            prefix=s.event_queue_prefix,
            routing_key=self.routing_key,
            ttl=s.event_queue_ttl,
            expires=s.event_queue_expires,
            exclusive=s.event_queue_exclusive,
            durable=s.event_queue_durable,
        )

    async def wakeup_workers(self) -> None:
        """Cast ``heartbeat`` so every worker sends a ``worker-heartbeat`` now (as Celery)."""
        message = request_message(
            request_body("heartbeat"), clock=self.clock.forward(), timeout=None
        )
        await self.transport.publish(message, names.pidbox_exchange(self.control_exchange))

    async def itercapture(
        self,
        limit: int | None = None,
        timeout: float | None = None,
        wakeup: bool = True,
        *,
        gaps: bool = False,
    ) -> AsyncIterator[Event | StreamGap]:
        """Yield each processed event (after its handler ran).

        ``limit`` counts events; ``timeout`` is a total deadline after which iteration ends.
        With ``wakeup`` the ``heartbeat`` cast is sent only after the subscription is live
        (Celery 5.7's ``events --dump`` sends it first and can miss the answers).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        count = 0
        accept = self.settings.accept_content
        async with self.transport.subscribe(self._binding()) as sub:
            self._generation = sub.generation
            if wakeup:
                await self.wakeup_workers()
            self.ready.set()
            while limit is None or count < limit:
                try:
                    async with asyncio.timeout_at(deadline):
                        delivery = await sub.receive()
                except TimeoutError:
                    return
                if delivery.generation != self._generation:
                    self._generation = delivery.generation
                    self.gaps += 1
                    log.warning(
                        "event stream reconnected: events may have been lost (gap %d)", self.gaps
                    )
                    if gaps:
                        yield StreamGap(delivery.generation)
                try:
                    payload = codec.decode(
                        delivery.body, delivery.content_type, delivery.content_encoding, accept
                    )
                    events = decode_events(payload)
                except ProtocolError as exc:
                    self._malformed(exc)
                    continue
                handlers, clock, offset = self.handlers, self.clock, self._local_offset
                for body in events:
                    try:
                        type_, event = event_from_message(body, clock, offset)
                    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                        # e.g. a utcoffset of 10**400 (valid JSON) overflows the shift.
                        self._malformed(exc)
                        continue
                    handler = handlers.get(type_) or handlers.get("*")
                    if handler is not None:
                        try:
                            outcome = handler(event)
                            # State.event returns a tuple or None: skip the coroutine check.
                            if (
                                outcome is not None
                                and outcome.__class__ is not tuple
                                and asyncio.iscoroutine(outcome)
                            ):
                                await outcome
                        except BrokenPipeError:
                            # Not a bad event: whoever reads our output is gone (`--dump |
                            # head`). Nothing is left to do, and every further event would fail
                            # the same way: end the stream, as Celery's receiver does.
                            raise
                        except Exception as exc:
                            # Celery's State raises on events its merge rules cannot take (a
                            # task event without uuid, an unhashable hostname, a non-numeric
                            # timestamp), and Celery's receiver dies with it; one bad event
                            # must not end a monitor's stream.
                            self._handler_failed(type_, exc)
                            continue
                    self.event_count += 1
                    count += 1
                    yield event
                    if limit is not None and count >= limit:
                        return

    async def capture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> None:
        """Run the handlers until ``limit`` events or the ``timeout`` deadline (or forever)."""
        async for _ in self.itercapture(limit=limit, timeout=timeout, wakeup=wakeup):
            pass

    def _handler_failed(self, type_: str, exc: Exception) -> None:
        self.handler_errors += 1
        if self.handler_errors <= 10 or self.handler_errors % 1000 == 0:
            log.warning(
                "handler for %.60r failed, event skipped (%d so far): %r",
                type_,
                self.handler_errors,
                exc,
                exc_info=self.handler_errors <= 3,
            )

    def _malformed(self, exc: BaseException) -> None:
        self.malformed += 1
        # Logged at WARNING for the first few, then every 1000th: a flood must not flood logs.
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            log.warning("skipping malformed event message (%d so far): %s", self.malformed, exc)

    def __repr__(self) -> str:
        return f"<EventReceiver {self.queue} events={self.event_count} gaps={self.gaps}>"
