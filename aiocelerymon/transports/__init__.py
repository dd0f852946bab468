"""Broker I/O behind one small protocol, in aiocelerymon's own types.

Adapters: ``memory`` (built in, the embedded default), ``amqp`` (aio-pika, extra ``amqp``) and
``redis`` (redis.asyncio, extra ``redis``). :func:`create_transport` picks one from a Celery
broker URL; the adapter modules are imported only when used, so the extras stay optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiocelerymon._url import BrokerURL, parse_url
from aiocelerymon.transports.base import (
    QueueDepth,
    Received,
    RetryPolicy,
    Subscription,
    SubscriptionBase,
    Transport,
    TransportBase,
    TransportState,
)
from aiocelerymon.wire.entities import Binding, Delivery, Exchange, ExchangeKind, Message

__all__ = [
    "Binding",
    "BrokerURL",
    "Delivery",
    "Exchange",
    "ExchangeKind",
    "Message",
    "QueueDepth",
    "Received",
    "RetryPolicy",
    "Subscription",
    "SubscriptionBase",
    "Transport",
    "TransportBase",
    "TransportState",
    "create_transport",
]

_EXTRA_HINT = 'install "aiocelerymon[{extra}]" to use {scheme}:// URLs'


def create_transport(
    url: str | BrokerURL,
    *,
    transport_options: Mapping[str, Any] | None = None,
    ssl: bool | Mapping[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    connect_timeout: float = 4.0,
) -> TransportBase:
    """Build the adapter for a Celery broker URL (not connected yet).

    ``transport_options`` are Celery's ``broker_transport_options``; ``ssl`` is Celery's
    ``broker_use_ssl`` (True or a dict of ssl options).

    Raises:
        ConfigurationError: the URL cannot be used.
        ImportError: the adapter's extra is not installed (the message names it).
    """
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {
        "transport_options": transport_options,
        "retry": retry,
        "connect_timeout": connect_timeout,
    }
    if parsed.transport == "memory":
        from aiocelerymon.transports.memory import MemoryTransport

        return MemoryTransport(parsed, **kwargs)
    try:
        if parsed.transport == "amqp":
            from aiocelerymon.transports.amqp import AmqpTransport

            return AmqpTransport(parsed, ssl=ssl, **kwargs)
        from aiocelerymon.transports.redis import RedisTransport

        return RedisTransport(parsed, ssl=ssl, **kwargs)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("aio_pika", "aiormq", "pamqp", "redis"):
            raise ImportError(
                _EXTRA_HINT.format(extra=parsed.transport, scheme=parsed.scheme)
            ) from exc
        raise
