"""The transport contract and the machinery every adapter shares.

An adapter implements five hooks (``_open``, ``_close_connection``, ``_publish``, ``_subscribe``,
``_unsubscribe``) and reports a dropped connection with ``_connection_lost``. This base owns
everything else, identically for every broker: state, deadlines, reconnection with jittered
backoff (one WARNING per outage, not per attempt), replay of live subscriptions with a bumped
*generation*, and clean teardown. Publishing is never retried: a command that may have reached
the broker must not be sent twice (httpcore retries only the connect phase, for the same reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from aiocelerymon._url import BrokerURL
from aiocelerymon.exceptions import (
    AuthenticationError,
    BrokerRefusedError,
    ClosedError,
    ConnectError,
    ConnectionLostError,
    EndOfSubscription,
    ResourceLockedError,
    TransportError,
)
from aiocelerymon.wire.entities import Binding, Delivery, Exchange, Message

__all__ = [
    "QueueDepth",
    "Received",
    "RetryPolicy",
    "Subscription",
    "SubscriptionBase",
    "Transport",
    "TransportBase",
    "TransportState",
]

log = logging.getLogger("aiocelerymon.transport")


class TransportState(StrEnum):
    """Where a transport is in its life."""

    IDLE = "IDLE"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    RECONNECTING = "RECONNECTING"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, for (re)connecting only.

    Each delay is drawn from ``[d/2, d]`` ("equal jitter") so a fleet of monitors does not
    reconnect in lock-step after a broker restart.
    """

    initial: float = 0.2
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: bool = True
    #: ``None`` retries forever (a monitor should outlive a broker outage).
    max_attempts: int | None = None

    def delays(self) -> Iterator[float]:
        """Yield the wait before each retry."""
        delay = self.initial
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            attempt += 1
            yield random.uniform(delay / 2, delay) if self.jitter else delay
            delay = min(self.maximum, delay * self.multiplier)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """A task queue's backlog: ``messages`` waiting, ``consumers`` attached (None: the broker
    cannot tell, as on Redis)."""

    name: str
    messages: int
    consumers: int | None


class Received:
    """A message taken from a queue with :meth:`Transport.get`, held until settled.

    ``ack()`` removes it for good; ``requeue()`` gives it back to the queue. A message still
    held when the connection drops (or the process dies) goes back to its queue by itself
    (AMQP: the broker; Redis: the next ``get`` on that queue; memory: at disconnect), marked
    ``redelivered``: nothing taken with ``get`` is ever lost, at most delivered twice.
    """

    __slots__ = ("_settle", "delivery", "malformed", "settled")

    def __init__(
        self,
        delivery: Delivery,
        settle: Callable[[bool], Awaitable[None]],
        malformed: str | None = None,
    ) -> None:
        self.delivery = delivery
        self._settle = settle
        self.settled = False
        #: Why the message could not be parsed (then ``delivery.body`` is the raw item).
        self.malformed = malformed

    async def ack(self) -> None:
        """Remove the message for good (idempotent)."""
        if not self.settled:
            await self._settle(True)
            self.settled = True

    async def requeue(self) -> None:
        """Give the message back to its queue (idempotent)."""
        if not self.settled:
            await self._settle(False)
            self.settled = True

    def __repr__(self) -> str:
        d = self.delivery
        return f"<Received {d.routing_key!r} {len(d.body)} bytes settled={self.settled}>"


@runtime_checkable
class Subscription(Protocol):
    """An open binding that yields :class:`Delivery` objects; an async context manager."""

    @property
    def queue(self) -> str:
        """The effective queue name (needed to address replies)."""
        ...

    @property
    def generation(self) -> int:
        """How many times the adapter began restoring this subscription after a reconnect.

        Bumped as the restore starts; ``Transport.state`` is ``CONNECTED`` once it finished.
        """
        ...

    async def receive(self) -> Delivery:
        """Wait for the next delivery.

        Raises:
            EndOfSubscription: the subscription (or its transport) was closed.
            ConnectionLostError: the adapter gave up reconnecting.
        """
        ...

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def aclose(self) -> None:
        """Stop consuming and remove what the subscription created (exclusive queues, bindings)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """A broker connection in aiocelerymon's own types; no driver type crosses it."""

    url: BrokerURL

    @property
    def state(self) -> TransportState:
        """The current state; cheap, no I/O."""
        ...

    async def connect(self, *, retry: bool = False) -> None:
        """Connect (idempotent); later drops are repaired in the background.

        With ``retry`` an unreachable broker is retried under the retry policy (forever by
        default) instead of failing: for a monitor started before its broker.

        Raises:
            ConnectError: the first connection failed within ``connect_timeout`` (with
                ``retry``: only a refused password, or the policy ran out of attempts).
            ClosedError: the transport was closed.
        """
        ...

    async def aclose(self) -> None:
        """Close (idempotent): end every subscription, clean up, disconnect."""
        ...

    async def publish(self, message: Message, exchange: Exchange, routing_key: str = "") -> None:
        """Publish once, declaring ``exchange`` first if this connection has not yet.

        Raises:
            ConnectionLostError: no connection within ``connect_timeout``, or it broke mid-publish
                (the message may or may not have been sent; it is never re-sent).
            BrokerRefusedError: the broker refused the exchange or the publish.
            ClosedError: the transport was closed.
        """
        ...

    def subscribe(self, binding: Binding) -> Subscription:
        """Return a subscription; it declares and starts consuming on ``__aenter__``.

        Raises:
            ClosedError: the transport was closed.
        """
        ...

    def on_connection_lost(
        self, callback: Callable[[BaseException | None], None]
    ) -> Callable[[], None]:
        """Call ``callback(error)`` each time an established connection drops; returns the
        function that removes it. Subscriptions are restored by themselves, but whatever was
        in flight on the broker at that moment (a queue's messages, pending replies) may be lost.
        """
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def queue_depth(self, name: str) -> QueueDepth | None:
        """Messages waiting in task queue ``name`` and its consumers; None if it does not exist.

        Raises:
            NotAQueueError: ``name`` holds something else (on Redis: a key of another type).
            TransportError: the broker failed or refused (a missing queue is not an error).
        """
        ...

    async def purge_queue(self, name: str) -> int | None:
        """Delete the messages waiting in task queue ``name`` (never unacknowledged ones);
        returns how many, or None if the queue does not exist.

        Only the queue's messages go: on Redis its priority lists, never a key of another type.

        Raises:
            NotAQueueError: ``name`` holds something else; nothing was deleted.
            TransportError: the broker failed or refused.
        """
        ...

    async def get(self, queue: str) -> Received | None:
        """Take the next waiting message of task queue ``queue`` (highest priority first), to
        be settled with :meth:`Received.ack` or :meth:`Received.requeue`; None when the queue is
        empty or does not exist.

        Raises:
            TransportError: the broker failed or refused.
        """
        ...

    async def ensure_queue(self, name: str) -> None:
        """Make sure task queue ``name`` exists, creating it as Celery's default queue does
        (durable, not exclusive, not auto-deleted) when missing; an existing queue is left as
        it is. Messages published to the default exchange (``""``) with ``name`` as the routing
        key then reach it on every broker.

        Raises:
            TransportError: the broker failed or refused.
        """
        ...


class SubscriptionBase:
    """The shared subscription: a delivery buffer fed by the adapter, with a generation counter.

    Adapters keep their per-subscription driver state in :attr:`handle`.
    """

    def __init__(self, transport: TransportBase, binding: Binding) -> None:
        self.binding = binding
        # A stable name across reconnects, so replayed bindings keep addressing the same queue.
        self._queue = binding.queue or f"aiocelerymon.{uuid.uuid4()}"
        self._transport = transport
        self._buffer: deque[Delivery] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._generation = 0
        self._started = False
        self._closed = False
        self._error: BaseException | None = None
        #: Adapter-owned state (consumer tag, channel, reader task...).
        self.handle: Any = None

    @property
    def queue(self) -> str:
        """The effective queue name."""
        return self._queue

    @property
    def generation(self) -> int:
        """Reconnect-and-restore count; compare it to detect a possible gap.

        Counted when a restore *begins* (deliveries of the restored consumer carry the new
        number); the transport's ``state`` is ``CONNECTED`` again once every restore finished.
        """
        return self._generation

    @property
    def closed(self) -> bool:
        """True once the subscription ended."""
        return self._closed

    # -- called by adapters ------------------------------------------------------------------

    def feed(self, delivery: Delivery) -> None:
        """Hand a delivery to the consumer (no-op once closed)."""
        if self._closed:
            return
        self._buffer.append(delivery)
        self._wake()

    def _end(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer API ------------------------------------------------------------------------

    async def receive(self) -> Delivery:
        """Wait for the next delivery (see :class:`Subscription`)."""
        while not self._buffer:
            if self._closed:
                if self._error is not None:
                    raise ConnectionLostError(str(self._error)) from self._error
                raise EndOfSubscription(f"subscription to {self._queue!r} is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._buffer.popleft()

    def receive_nowait(self) -> Delivery | None:
        """Return a buffered delivery or None, without waiting."""
        return self._buffer.popleft() if self._buffer else None

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            try:
                yield await self.receive()
            except EndOfSubscription:
                return

    async def start(self) -> Self:
        """Declare and start consuming (what ``async with`` does)."""
        if self._started:
            return self
        self._started = True
        await self._transport._start(self)
        return self

    async def aclose(self) -> None:
        """Stop consuming and clean up; safe to call twice and under cancellation."""
        if self._closed and self not in self._transport._subs:
            return
        self._end()
        await self._transport._stop(self)

    async def __aenter__(self) -> Self:
        try:
            return await self.start()
        except BaseException:
            self._end()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self._queue!r} {state} gen={self._generation}>"


class TransportBase(ABC):
    """State, deadlines, reconnection and subscription replay for every adapter."""

    def __init__(
        self,
        url: BrokerURL,
        *,
        transport_options: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 4.0,
    ) -> None:
        self.url = url
        self.transport_options: dict[str, Any] = dict(transport_options or {})
        self.retry = retry or RetryPolicy()
        #: Celery's ``broker_connection_timeout`` default is 4 s.
        self.connect_timeout = connect_timeout
        self._state = TransportState.IDLE
        self._subs: set[SubscriptionBase] = set()
        self._ready = asyncio.Event()
        self._connect_lock = asyncio.Lock()
        self._reconnector: asyncio.Task[None] | None = None
        # A loss reported while a reconnect restores: the restore must be redone.
        self._lost_during_restore: BaseException | None = None
        # Stopped while reconnecting: their bindings are still on the broker.
        self._orphans: list[SubscriptionBase] = []
        self._loss_listeners: list[Callable[[BaseException | None], None]] = []

    # -- adapter hooks -----------------------------------------------------------------------

    @abstractmethod
    async def _open(self) -> None:
        """Establish the connection(s). Raise a :class:`TransportError` on failure."""

    @abstractmethod
    async def _close_connection(self) -> None:
        """Drop the connection(s) quietly; must not raise."""

    @abstractmethod
    async def _publish(self, message: Message, exchange: Exchange, routing_key: str) -> None:
        """Declare ``exchange`` if needed and publish once."""

    @abstractmethod
    async def _subscribe(self, sub: SubscriptionBase) -> None:
        """Declare, bind and start feeding ``sub`` (also called to restore after a reconnect)."""

    @abstractmethod
    async def _unsubscribe(self, sub: SubscriptionBase) -> None:
        """Stop feeding ``sub`` and remove what it created; called while connected."""

    # -- public API --------------------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        """The current state."""
        return self._state

    async def connect(self, *, retry: bool = False) -> None:
        """Connect; see :class:`Transport`.

        With ``retry`` a broker that is down is retried under :attr:`retry` (forever by
        default), with one WARNING for the outage and one INFO once connected, as a monitor
        started before its broker needs; only a refused password or the policy's last attempt
        ends it.
        """
        async with self._connect_lock:
            if self._state is TransportState.CLOSED:
                raise ClosedError(f"{self!r} is closed")
            if self._state is not TransportState.IDLE:
                return
            self._state = TransportState.CONNECTING
            try:
                if retry:
                    await self._open_retrying()
                else:
                    await self._open_within_deadline()
            except BaseException:
                self._state = TransportState.IDLE
                await self._close_connection()
                raise
            self._state = TransportState.CONNECTED
            self._ready.set()

    async def publish(self, message: Message, exchange: Exchange, routing_key: str = "") -> None:
        """Publish once; see :class:`Transport`."""
        await self._wait_ready()
        await self._publish(message, exchange, routing_key)

    def subscribe(self, binding: Binding) -> SubscriptionBase:
        """Create a subscription; see :class:`Transport`."""
        self._check_open()
        return SubscriptionBase(self, binding)

    def on_connection_lost(
        self, callback: Callable[[BaseException | None], None]
    ) -> Callable[[], None]:
        """See :class:`Transport`."""
        self._loss_listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._loss_listeners.remove(callback)

        return remove

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (e.g. after an outage); ``timeout`` defaults to connect_timeout.

        Raises:
            ConnectionLostError: still not connected when the deadline passed.
            ClosedError: the transport was closed.
        """
        self._check_open()
        if self._state is TransportState.IDLE:
            await self.connect()
            return
        try:
            async with asyncio.timeout(self.connect_timeout if timeout is None else timeout):
                await self._ready.wait()
        except TimeoutError as exc:
            raise ConnectionLostError(f"{self.url.redacted()} still unreachable") from exc
        self._check_open()

    async def aclose(self) -> None:
        """Close; see :class:`Transport`."""
        if self._state is TransportState.CLOSED:
            return
        connected = self._state is TransportState.CONNECTED
        self._state = TransportState.CLOSED
        if self._reconnector is not None:
            self._reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnector
        subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub._end()
            if connected:
                await self._quiet_unsubscribe(sub)
        await self._close_connection()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url.redacted()} {self._state.value}>"

    # -- machinery ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is TransportState.CLOSED:
            raise ClosedError(f"{self!r} is closed")

    async def _open_within_deadline(self) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._open()
        except TimeoutError as exc:
            raise ConnectError(
                f"could not connect to {self.url.redacted()} within {self.connect_timeout}s"
            ) from exc

    async def _open_retrying(self) -> None:
        delays = self.retry.delays()
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._open_within_deadline()
            except AuthenticationError:
                raise  # a wrong password does not fix itself
            except (TransportError, OSError) as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                if attempts == 1:
                    log.warning(
                        "cannot connect to %s (%s); retrying until it answers",
                        self.url.redacted(),
                        exc,
                    )
                else:
                    log.debug("connect attempt %d to %s failed: %r", attempts, self.url, exc)
                await self._close_connection()
                await asyncio.sleep(delay)
                continue
            if attempts > 1:
                log.info("connected to %s after %d attempts", self.url.redacted(), attempts)
            return

    async def _wait_ready(self) -> None:
        if self._state is TransportState.CONNECTED:
            return
        await self.wait_connected()

    async def _start(self, sub: SubscriptionBase) -> None:
        await self._wait_ready()
        self._subs.add(sub)
        try:
            await self._subscribe(sub)
        except BaseException:
            self._subs.discard(sub)
            # Remove whatever was declared before the failure (a binding member, a queue...).
            if self._state is TransportState.CONNECTED:
                await asyncio.shield(self._quiet_unsubscribe(sub))
            raise

    async def _stop(self, sub: SubscriptionBase) -> None:
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        if self._state is TransportState.CONNECTED:
            # Shielded: a cancelled caller must still leave no consumer or binding behind.
            await asyncio.shield(self._quiet_unsubscribe(sub))
        elif self._state is TransportState.RECONNECTING:
            self._orphans.append(sub)  # cleaned up by _reconnect once connected

    async def _quiet_unsubscribe(self, sub: SubscriptionBase) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._unsubscribe(sub)
        except (TransportError, OSError, TimeoutError) as exc:
            log.debug("cleanup of %r on %s failed: %r", sub, self.url.redacted(), exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        """Adapters call this when a connection dropped; starts one reconnect loop."""
        if self._state is TransportState.RECONNECTING:
            # A connection the restore just made died: redo the restore, do not report CONNECTED.
            self._lost_during_restore = exc or ConnectionLostError("closed during restore")
            return
        if self._state is not TransportState.CONNECTED:
            return
        self._state = TransportState.RECONNECTING
        self._ready.clear()
        log.warning(
            "connection to %s lost (%s); reconnecting", self.url.redacted(), exc or "closed"
        )
        self._reconnector = asyncio.get_running_loop().create_task(
            self._reconnect(), name=f"aiocelerymon-reconnect-{self.url.redacted()}"
        )
        for callback in list(self._loss_listeners):
            try:
                callback(exc)
            except Exception:  # a listener's bug must not stop the reconnect
                log.exception("connection-lost listener %r failed", callback)

    async def _reconnect(self) -> None:
        attempts = 0
        delays = self.retry.delays()
        while True:
            attempts += 1
            await self._close_connection()
            self._lost_during_restore = None  # losses of what was just closed are stale
            try:
                await self._open_within_deadline()
                while self._orphans:
                    await self._quiet_unsubscribe(self._orphans.pop())
                for sub in list(self._subs):
                    if sub not in self._subs:
                        continue  # stopped while the others were being restored
                    # Bump first: deliveries after the restore carry the new generation.
                    sub._generation += 1
                    try:
                        await self._subscribe(sub)
                    except BrokerRefusedError as exc:
                        if isinstance(exc, ResourceLockedError):
                            raise  # the old exclusive queue is not released yet: retry
                        # Permanent for this binding (e.g. its exchange was redeclared with
                        # other flags): end it visibly and keep restoring the others.
                        log.error("cannot restore %r on %s: %s", sub, self.url.redacted(), exc)
                        self._subs.discard(sub)
                        sub._end(exc)
                # Closed while the restore ran (its _stop saw RECONNECTING): a subscription
                # restored after its owner left would keep consuming until the next reconnect.
                while self._orphans:
                    await self._quiet_unsubscribe(self._orphans.pop())
                if self._lost_during_restore is not None:
                    raise ConnectionLostError(
                        f"{self.url.redacted()} dropped again during the restore"
                    ) from self._lost_during_restore
            except (TransportError, OSError) as exc:
                delay = next(delays, None)
                if delay is None:
                    log.error(
                        "giving up on %s after %d attempts: %r",
                        self.url.redacted(),
                        attempts,
                        exc,
                    )
                    self._give_up(exc)
                    return
                log.debug(
                    "reconnect attempt %d to %s failed: %r", attempts, self.url.redacted(), exc
                )
                await asyncio.sleep(delay)
                continue
            break
        self._state = TransportState.CONNECTED
        self._ready.set()
        log.info("reconnected to %s after %d attempt(s)", self.url.redacted(), attempts)

    def _give_up(self, exc: BaseException) -> None:
        error = ConnectionLostError(f"gave up reconnecting to {self.url.redacted()}: {exc!r}")
        self._state = TransportState.CLOSED
        subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub._end(error)

    # -- task queues (appended: operator chores, not part of the reconnect machinery) --------

    async def queue_depth(self, name: str) -> QueueDepth | None:
        """See :class:`Transport`."""
        await self._wait_ready()
        found = await self._queue_depth(name)
        return None if found is None else QueueDepth(name, *found)

    async def purge_queue(self, name: str) -> int | None:
        """See :class:`Transport`."""
        await self._wait_ready()
        return await self._purge_queue(name)

    async def get(self, queue: str) -> Received | None:
        """See :class:`Transport`."""
        await self._wait_ready()
        return await self._get(queue)

    async def ensure_queue(self, name: str) -> None:
        """See :class:`Transport`."""
        await self._wait_ready()
        await self._ensure_queue(name)

    @abstractmethod
    async def _get(self, queue: str) -> Received | None:
        """Take one message of ``queue`` with manual acknowledgement."""

    @abstractmethod
    async def _ensure_queue(self, name: str) -> None:
        """Declare task queue ``name`` unless it exists."""

    @abstractmethod
    async def _queue_depth(self, name: str) -> tuple[int, int | None] | None:
        """``(messages, consumers)`` of queue ``name``, None if it does not exist."""

    @abstractmethod
    async def _purge_queue(self, name: str) -> int | None:
        """Delete the waiting messages of ``name``; how many, None if it does not exist."""
