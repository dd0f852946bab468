"""The client side of the pidbox: one reply queue per client, replies routed by ticket.

Celery declares a reply queue per ``Mailbox`` and drains it per call, stashing foreign tickets in
``unclaimed`` (kombu ``Mailbox._collect``). Here one long-lived subscription feeds any number of
concurrent calls: each call registers its ticket *before* publishing and owns a private inbox, so
a reply can only ever reach the call that asked for it; unknown or expired tickets are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiocelerymon.exceptions import ConnectionLostError, EndOfSubscription, ProtocolError
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.pidbox import request_message

if TYPE_CHECKING:
    from aiocelerymon.transports import Subscription, Transport

__all__ = ["ControlSettings", "Mailbox"]

log = logging.getLogger("aiocelerymon.control")


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Celery's remote-control settings, with Celery's names and defaults.

    ``control_queue_exclusive`` defaults to True (Celery 5.7's default, the only kind of
    transient queue RabbitMQ >= 4.3 accepts; harmless with older workers, since each client
    owns its reply queue).
    """

    control_exchange: str = names.CONTROL_EXCHANGE
    control_queue_ttl: float | None = names.CONTROL_QUEUE_TTL
    control_queue_expires: float | None = names.CONTROL_QUEUE_EXPIRES
    control_queue_exclusive: bool = True
    control_queue_durable: bool = False
    accept_content: frozenset[str] = field(default=codec.DEFAULT_ACCEPT)
    #: Celery's ``task_serializer``: the pidbox serializer on both sides (Celery 5.1+).
    task_serializer: str = "json"


class _Inbox:
    """Replies for one ticket, plus the error that ended the reply stream, if any."""

    __slots__ = ("error", "queue", "sent")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.error: BaseException | None = None
        #: The request was published: a connection lost from now on may have lost its replies.
        self.sent = False

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.queue.put_nowait({})  # wake the waiter; it checks .error first


class Mailbox:
    """Publishes requests and demultiplexes replies for one client."""

    def __init__(
        self, transport: Transport, settings: ControlSettings, clock: LamportClock | None = None
    ) -> None:
        self.transport = transport
        self.settings = settings
        #: Our reply routing key; kombu derives one per process/object, any unique token works.
        self.oid = str(uuid.uuid4())
        #: The client's Lamport clock (shared with its events, as Celery's one ``app.clock``).
        self.clock = clock if clock is not None else LamportClock()
        #: Replies dropped: unknown (late, or for a cancelled call) or expired tickets.
        self.dropped = 0
        #: Replies that could not be decoded (logged, never raised into a call).
        self.malformed = 0
        self._inboxes: dict[str, _Inbox] = {}
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._unlisten = transport.on_connection_lost(self._connection_lost)

    @property
    def reply_exchange(self) -> str:
        """``reply.<control_exchange>.pidbox``."""
        return names.reply_exchange(self.settings.control_exchange).name

    @property
    def generation(self) -> int:
        """The reply subscription's reconnect count (0 before it exists)."""
        return self._sub.generation if self._sub is not None else 0

    async def listen(self) -> None:
        """Declare the reply queue and start routing replies (once per client)."""
        async with self._lock:  # concurrent first calls must not declare two reply queues
            if self._sub is not None:
                return
            s = self.settings
            binding = names.reply_binding(
                self.oid,
                s.control_exchange,
                ttl=s.control_queue_ttl,
                expires=s.control_queue_expires,
                exclusive=s.control_queue_exclusive,
                durable=s.control_queue_durable,
            )
            sub = self.transport.subscribe(binding)
            await sub.__aenter__()
            self._sub = sub
            self._reader = asyncio.get_running_loop().create_task(
                self._route(sub), name=f"aiocelerymon-replies-{self.oid}"
            )

    def register(self, ticket: str) -> _Inbox:
        """Open the inbox for ``ticket``; replies for it are kept from now on."""
        inbox = _Inbox()
        self._inboxes[ticket] = inbox
        return inbox

    def unregister(self, ticket: str) -> None:
        """Forget ``ticket``: later replies to it are dropped, never handed to anyone else."""
        self._inboxes.pop(ticket, None)

    async def publish(self, body: dict[str, Any], timeout: float | None) -> None:
        """Publish a request to ``<control_exchange>.pidbox`` (header ``expires`` from timeout)."""
        message = request_message(
            body,
            clock=self.clock.forward(),
            timeout=timeout,
            serializer=self.settings.task_serializer,
        )
        await self.transport.publish(message, names.pidbox_exchange(self.settings.control_exchange))

    async def _route(self, sub: Subscription) -> None:
        accept = self.settings.accept_content
        try:
            async for delivery in sub:
                headers = delivery.headers
                inbox = self._inboxes.get(headers.get("ticket"))  # type: ignore[arg-type]
                expires = headers.get("expires")
                if inbox is None or (expires and expires < time.time()):
                    self.dropped += 1
                    continue
                with contextlib.suppress(TypeError, ValueError):
                    self.clock.adjust(int(headers.get("clock") or 0))
                try:
                    body = codec.decode(
                        delivery.body, delivery.content_type, delivery.content_encoding, accept
                    )
                except ProtocolError as exc:
                    self.malformed += 1
                    log.warning("dropping undecodable control reply: %s", exc)
                    continue
                if not isinstance(body, dict):
                    self.malformed += 1
                    log.warning("dropping control reply that is not an object: %.100r", body)
                    continue
                inbox.queue.put_nowait(body)
        except (ConnectionLostError, EndOfSubscription) as exc:
            if self._sub is sub:
                self._sub = None  # the next call subscribes afresh
            for inbox in self._inboxes.values():
                inbox.fail(exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        # Replies published while the reply queue is gone are lost for good (an exclusive
        # queue dies with its connection; kombu's Redis pub/sub-less reply lists survive, but a
        # worker's reply may have been mid-flight). Celery's client would silently wait out its
        # timeout and return fewer nodes; we fail the calls that were waiting, at once, and
        # never re-send their requests. Calls not yet sent wait for the reconnect as usual.
        error = ConnectionLostError(f"connection to the broker lost ({exc or 'closed'})")
        for inbox in self._inboxes.values():
            if inbox.sent and inbox.error is None:
                inbox.fail(error)

    async def aclose(self) -> None:
        """Stop routing and remove the reply queue."""
        self._unlisten()
        sub, self._sub = self._sub, None
        reader, self._reader = self._reader, None
        if sub is not None:
            await sub.aclose()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
