"""In-process broker with AMQP routing semantics: the embedded default, and the test double.

Brokers are looked up by URL (``memory://`` is the default one, ``memory://name`` another), so a
client and a node in the same process meet just as they would on RabbitMQ. It keeps AMQP's
rules that matter to Celery: exchanges compare their flags on redeclare, direct/fanout/topic
routing, exclusive queues owned by one connection and deleted with it, auto-delete queues
deleted with their last consumer, and per-queue message TTL.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiocelerymon._url import BrokerURL, parse_url
from aiocelerymon.exceptions import (
    BrokerRefusedError,
    ConnectError,
    ConnectionLostError,
    ResourceLockedError,
)
from aiocelerymon.transports.base import Received, SubscriptionBase, TransportBase
from aiocelerymon.wire.entities import Delivery, Exchange, ExchangeKind, Message

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MemoryBroker", "MemoryTransport", "topic_matches"]


@lru_cache(maxsize=1024)
def _topic_regex(pattern: str) -> re.Pattern[str]:
    # AMQP topic rules: words split by '.', '*' is exactly one word, '#' is zero or more.
    parts: list[str] = []
    for word in pattern.split("."):
        if word == "#":
            parts.append(r"(?:[^.]*(?:\.[^.]*)*)?")
        elif word == "*":
            parts.append(r"[^.]*")
        else:
            parts.append(re.escape(word))
    regex = r"\.".join(parts)
    # "a.#" must also match "a": let a '#' word swallow its separating dot.
    regex = regex.replace(r"\.(?:[^.]*(?:\.[^.]*)*)?", r"(?:\.[^.]*)*")
    regex = regex.replace(r"(?:[^.]*(?:\.[^.]*)*)?\.", r"(?:[^.]*\.)*")
    return re.compile(regex + r"\Z")


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether an AMQP topic binding key matches a routing key."""
    return _topic_regex(pattern).match(routing_key) is not None


@dataclass(eq=False)
class _Queue:
    name: str
    exclusive_owner: MemoryTransport | None
    auto_delete: bool
    message_ttl: float | None
    consumers: list[SubscriptionBase] = field(default_factory=list)
    backlog: deque[tuple[float, Delivery]] = field(default_factory=deque)
    next_consumer: int = 0


@dataclass(eq=False)
class _Exchange:
    spec: Exchange
    bindings: list[tuple[str, _Queue]] = field(default_factory=list)


class MemoryBroker:
    """One in-process broker. Get it with :meth:`get`; stop/start it to simulate outages."""

    _registry: dict[str, MemoryBroker] = {}  # noqa: RUF012 - process-wide by design

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.running = True
        self._exchanges: dict[str, _Exchange] = {}
        self._queues: dict[str, _Queue] = {}
        self._connections: set[MemoryTransport] = set()

    @classmethod
    def get(cls, name: str = "") -> MemoryBroker:
        """The broker for ``memory://<name>`` (created on first use)."""
        broker = cls._registry.get(name)
        if broker is None:
            broker = cls._registry[name] = cls(name)
        return broker

    # -- fault injection ---------------------------------------------------------------------

    def drop_connections(self) -> None:
        """Sever every connection, as a broker restart or a network cut would."""
        for conn in list(self._connections):
            self._disconnect(conn)
            conn._connection_lost(ConnectionResetError("memory broker dropped the connection"))

    def stop(self) -> None:
        """Refuse new connections and drop the current ones."""
        self.running = False
        self.drop_connections()

    def start(self) -> None:
        """Accept connections again."""
        self.running = True

    # -- introspection (tests, CLI) ----------------------------------------------------------

    def queue_names(self) -> set[str]:
        """Names of the queues that exist now."""
        return set(self._queues)

    def consumer_count(self, queue: str) -> int:
        """Consumers attached to ``queue`` (0 if it does not exist)."""
        q = self._queues.get(queue)
        return len(q.consumers) if q else 0

    def message_count(self, queue: str) -> int:
        """Messages waiting in ``queue``."""
        q = self._queues.get(queue)
        return len(q.backlog) if q else 0

    # -- broker operations -------------------------------------------------------------------

    def _connect(self, conn: MemoryTransport) -> None:
        if not self.running:
            raise ConnectError(f"memory broker {self.name!r} is stopped")
        self._connections.add(conn)

    def _disconnect(self, conn: MemoryTransport) -> None:
        self._connections.discard(conn)
        # What the connection took with get() and did not settle goes back, as AMQP does.
        for q, delivery in reversed(conn._held):
            if self._queues.get(q.name) is q:
                redelivered = dataclasses.replace(delivery, redelivered=True)
                q.backlog.appendleft((time.monotonic(), redelivered))
        conn._held.clear()
        for q in list(self._queues.values()):
            q.consumers = [c for c in q.consumers if c.handle is not conn]
            if q.exclusive_owner is conn or (q.auto_delete and not q.consumers):
                self._delete_queue(q)

    def _declare_exchange(self, spec: Exchange) -> _Exchange:
        ex = self._exchanges.get(spec.name)
        if ex is None:
            ex = self._exchanges[spec.name] = _Exchange(spec)
        elif ex.spec != spec:
            # RabbitMQ answers 406 PRECONDITION_FAILED to an inequivalent redeclare.
            raise BrokerRefusedError(
                f"PRECONDITION_FAILED - inequivalent redeclare of exchange {spec.name!r}: "
                f"{spec} vs existing {ex.spec}"
            )
        return ex

    def _publish(self, message: Message, exchange: Exchange, routing_key: str) -> None:
        if not exchange.name:
            # AMQP's default exchange: every queue is bound by its own name (the
            # reply_to.exchange == "" shortcut workers accept, wire reference §2.4).
            q = self._queues.get(routing_key)
            if q is not None:
                self._enqueue(q, message, "", routing_key, time.monotonic())
            return
        ex = self._declare_exchange(exchange)
        kind = ex.spec.kind
        now = time.monotonic()
        seen: set[int] = set()
        for key, q in ex.bindings:
            if id(q) in seen:
                continue
            if (
                kind is ExchangeKind.FANOUT
                or (kind is ExchangeKind.DIRECT and key == routing_key)
                or (kind is ExchangeKind.TOPIC and topic_matches(key, routing_key))
            ):
                seen.add(id(q))
                self._enqueue(q, message, ex.spec.name, routing_key, now)

    def _enqueue(
        self, q: _Queue, message: Message, exchange: str, routing_key: str, now: float
    ) -> None:
        if q.consumers:
            # AMQP round-robins one queue's messages among its consumers.
            sub = q.consumers[q.next_consumer % len(q.consumers)]
            q.next_consumer += 1
            sub.feed(_delivery(message, exchange, routing_key, sub.generation))
        else:
            q.backlog.append((now, _delivery(message, exchange, routing_key, 0)))

    def _bind(self, conn: MemoryTransport, sub: SubscriptionBase) -> None:
        b = sub.binding
        ex = self._declare_exchange(b.exchange)
        q = self._queues.get(sub.queue)
        if q is None:
            q = self._queues[sub.queue] = _Queue(
                sub.queue,
                exclusive_owner=conn if b.exclusive else None,
                auto_delete=b.auto_delete,
                message_ttl=b.message_ttl,
            )
        elif q.exclusive_owner is not None and q.exclusive_owner is not conn:
            raise ResourceLockedError(
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue {sub.queue!r}"
            )
        if (b.routing_key, q) not in ex.bindings:
            ex.bindings.append((b.routing_key, q))
        sub.handle = conn
        q.consumers.append(sub)
        now = time.monotonic()
        while q.backlog:
            stamp, delivery = q.backlog.popleft()
            if q.message_ttl is None or now - stamp < q.message_ttl:
                sub.feed(_with_generation(delivery, sub.generation))

    def _unbind(self, sub: SubscriptionBase) -> None:
        q = self._queues.get(sub.queue)
        if q is None:
            return
        if sub in q.consumers:
            q.consumers.remove(sub)
        if not q.consumers and (q.auto_delete or q.exclusive_owner is not None):
            self._delete_queue(q)

    def _delete_queue(self, q: _Queue) -> None:
        if self._queues.get(q.name) is q:
            del self._queues[q.name]
        for ex in self._exchanges.values():
            ex.bindings = [(k, bq) for k, bq in ex.bindings if bq is not q]


def _delivery(message: Message, exchange: str, routing_key: str, generation: int) -> Delivery:
    return Delivery(
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=dict(message.headers),
        exchange=exchange,
        routing_key=routing_key,
        delivery_mode=message.delivery_mode,
        priority=message.priority,
        generation=generation,
        properties=dict(message.properties),
    )


def _with_generation(d: Delivery, generation: int) -> Delivery:
    return dataclasses.replace(d, generation=generation)


class MemoryTransport(TransportBase):
    """Transport on a :class:`MemoryBroker` in this process (``memory://[name]``)."""

    def __init__(
        self,
        url: str | BrokerURL = "memory://",
        *,
        transport_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        parsed = parse_url(url)
        super().__init__(parsed, transport_options=transport_options, **kwargs)
        self.broker = MemoryBroker.get(parsed.hostname + parsed.path)
        self._attached = False
        #: Taken with get(), not settled yet: (queue, delivery).
        self._held: list[tuple[_Queue, Delivery]] = []

    async def _open(self) -> None:
        self.broker._connect(self)
        self._attached = True

    async def _close_connection(self) -> None:
        if self._attached:
            self._attached = False
            self.broker._disconnect(self)

    def _require_connection(self) -> None:
        if not self._attached:
            raise ConnectionLostError("memory broker connection is down")

    async def _publish(self, message: Message, exchange: Exchange, routing_key: str) -> None:
        self._require_connection()
        self.broker._publish(message, exchange, routing_key)

    async def _subscribe(self, sub: SubscriptionBase) -> None:
        self._require_connection()
        self.broker._bind(self, sub)

    async def _unsubscribe(self, sub: SubscriptionBase) -> None:
        self.broker._unbind(sub)

    # -- task queues -------------------------------------------------------------------------

    async def _queue_depth(self, name: str) -> tuple[int, int | None] | None:
        self._require_connection()
        q = self.broker._queues.get(name)
        return None if q is None else (len(q.backlog), len(q.consumers))

    async def _get(self, queue: str) -> Received | None:
        self._require_connection()
        q = self.broker._queues.get(queue)
        if q is None:
            return None
        if q.message_ttl is not None:
            now = time.monotonic()
            q.backlog = deque(e for e in q.backlog if now - e[0] < q.message_ttl)
        if not q.backlog:
            return None
        # Highest priority first (oldest among equals), as RabbitMQ and kombu's Redis steps do.
        index = max(range(len(q.backlog)), key=lambda i: (q.backlog[i][1].priority or 0, -i))
        _stamp, delivery = q.backlog[index]
        del q.backlog[index]
        entry = (q, delivery)
        self._held.append(entry)

        async def settle(ack: bool) -> None:
            self._require_connection()
            self._held.remove(entry)
            if not ack and self.broker._queues.get(q.name) is q:
                q.backlog.appendleft((time.monotonic(), delivery))

        return Received(delivery, settle)

    async def _ensure_queue(self, name: str) -> None:
        self._require_connection()
        if name not in self.broker._queues:
            self.broker._queues[name] = _Queue(
                name, exclusive_owner=None, auto_delete=False, message_ttl=None
            )

    async def _purge_queue(self, name: str) -> int | None:
        self._require_connection()
        q = self.broker._queues.get(name)
        if q is None:
            return None
        count = len(q.backlog)
        q.backlog.clear()
        return count
