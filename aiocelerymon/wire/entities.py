"""Broker-neutral value types: exchanges, bindings, outgoing messages and deliveries.

These are the only types that cross the transport boundary; no driver type ever does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiocelerymon.exceptions import ConfigurationError

__all__ = ["PROPERTY_NAMES", "Binding", "Delivery", "Exchange", "ExchangeKind", "Message"]

#: The other AMQP basic properties a message may carry (Celery's task messages use
#: ``correlation_id`` and ``reply_to``), in AMQP's flag order; values are str, except
#: ``timestamp`` (int seconds).
PROPERTY_NAMES = (
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)

#: Header values are whatever JSON (and AMQP field tables) can carry.
Headers = Mapping[str, Any]


class ExchangeKind(StrEnum):
    """AMQP exchange kinds; adapters emulate them where the broker has none (Redis)."""

    DIRECT = "direct"
    FANOUT = "fanout"
    TOPIC = "topic"


@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange, with the flags a RabbitMQ redeclare compares exactly."""

    name: str
    kind: ExchangeKind
    durable: bool = False
    auto_delete: bool = False


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a subscription receives from: a queue bound to an exchange by a routing key.

    ``queue=None`` lets the adapter generate a unique name. ``expires`` and ``message_ttl`` are
    seconds; AMQP adapters send them as integer milliseconds (``x-expires``/``x-message-ttl``).
    """

    exchange: Exchange
    routing_key: str = ""
    queue: str | None = None
    exclusive: bool = True
    durable: bool = False
    auto_delete: bool = True
    expires: float | None = None
    message_ttl: float | None = None

    def __post_init__(self) -> None:
        # Celery 5.6+ refuses the same combination (ImproperlyConfigured in app/control.py).
        if self.durable and self.exclusive:
            raise ConfigurationError("a queue cannot be both durable and exclusive")
        for name in ("expires", "message_ttl"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class Message:
    """An outgoing message: an encoded body plus the properties kombu puts on the wire."""

    body: bytes
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    headers: Headers = field(default_factory=dict)
    #: 1 = transient (replies, events), 2 = persistent (kombu's default, used for requests).
    delivery_mode: int = 1
    priority: int = 0
    #: Any of :data:`PROPERTY_NAMES` (what ``migrate`` carries over unchanged).
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message. ``generation`` is the subscription's reconnect count when received."""

    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: Headers
    exchange: str
    routing_key: str
    delivery_mode: int | None = None
    priority: int | None = None
    generation: int = 0
    #: Any of :data:`PROPERTY_NAMES` the message carried.
    properties: Mapping[str, Any] = field(default_factory=dict)
    #: The broker delivered it before (AMQP ``redelivered``; a Redis message recovered from an
    #: interrupted ``get``): it may have been handled already.
    redelivered: bool = False
