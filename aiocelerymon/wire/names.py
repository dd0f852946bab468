"""Every exchange, queue and routing-key name and flag Celery uses, in one place.

Values match ``celery/app/defaults.py`` and ``kombu/pidbox.py`` (see
shared/reference/celery-wire-protocol.md §1, §2.1, §5.1). Only exchanges are declared with
fixed flags; queue flags follow the settings, with aiocelerymon's own queues exclusive by default
(Celery 5.7's default, and the only kind RabbitMQ >= 4.3 accepts for transient queues).
"""

from __future__ import annotations

import os
import socket

from aiocelerymon.wire.entities import Binding, Exchange, ExchangeKind

__all__ = [
    "CONTROL_EXCHANGE",
    "CONTROL_QUEUE_EXPIRES",
    "CONTROL_QUEUE_TTL",
    "EVENT_EXCHANGE",
    "EVENT_QUEUE_EXPIRES",
    "EVENT_QUEUE_PREFIX",
    "EVENT_QUEUE_TTL",
    "PERSISTENT",
    "TASK_MULTI",
    "TRANSIENT",
    "anon_nodename",
    "event_binding",
    "event_exchange",
    "event_queue_name",
    "event_routing_key",
    "node_binding",
    "node_queue_name",
    "pidbox_exchange",
    "reply_binding",
    "reply_exchange",
    "reply_queue_name",
    "to_milliseconds",
]

#: ``control_exchange`` default: the pidbox namespace N in ``N.pidbox``.
CONTROL_EXCHANGE = "celery"
#: ``control_queue_ttl`` (x-message-ttl) and ``control_queue_expires`` (x-expires), seconds.
CONTROL_QUEUE_TTL = 300.0
CONTROL_QUEUE_EXPIRES = 10.0
#: ``event_exchange``, ``event_queue_prefix``, ``event_queue_ttl``, ``event_queue_expires``.
EVENT_EXCHANGE = "celeryev"
EVENT_QUEUE_PREFIX = "celeryev"
EVENT_QUEUE_TTL = 5.0
EVENT_QUEUE_EXPIRES = 60.0
#: Worker task events are batched under this routing key (celery/worker/consumer/events.py).
TASK_MULTI = "task.multi"
#: AMQP delivery modes: requests go out persistent (kombu's default when publishing by exchange
#: name), replies and events transient.
TRANSIENT = 1
PERSISTENT = 2


def to_milliseconds(seconds: float | None) -> int | None:
    """Seconds to the integer milliseconds RabbitMQ compares (kombu: ``int(float(s) * 1000)``).

    A float ``x-expires`` is refused with 406 when the queue exists with an integer one.
    """
    return None if seconds is None else int(float(seconds) * 1000)


def pidbox_exchange(namespace: str = CONTROL_EXCHANGE) -> Exchange:
    """``<N>.pidbox``: transient fanout, where requests are broadcast."""
    return Exchange(f"{namespace}.pidbox", ExchangeKind.FANOUT, durable=False, auto_delete=False)


def reply_exchange(namespace: str = CONTROL_EXCHANGE) -> Exchange:
    """``reply.<N>.pidbox``: transient direct, where workers send replies by oid."""
    return Exchange(
        f"reply.{namespace}.pidbox", ExchangeKind.DIRECT, durable=False, auto_delete=False
    )


def event_exchange(name: str = EVENT_EXCHANGE) -> Exchange:
    """``celeryev``: a *durable* topic exchange (plain kombu Exchange defaults)."""
    return Exchange(name, ExchangeKind.TOPIC, durable=True, auto_delete=False)


def node_queue_name(nodename: str, namespace: str = CONTROL_EXCHANGE) -> str:
    """``<nodename>.<N>.pidbox``: the queue a node consumes requests from."""
    return f"{nodename}.{namespace}.pidbox"


def reply_queue_name(oid: str, namespace: str = CONTROL_EXCHANGE) -> str:
    """``<oid>.reply.<N>.pidbox``: a client's reply queue, bound by routing key ``<oid>``."""
    return f"{oid}.reply.{namespace}.pidbox"


def event_queue_name(node_id: str, prefix: str = EVENT_QUEUE_PREFIX) -> str:
    """``<prefix>.<node_id>``: an event receiver's queue."""
    return f"{prefix}.{node_id}"


def event_routing_key(event_type: str) -> str:
    """``task-succeeded`` -> ``task.succeeded`` (celery/events/dispatcher.py)."""
    return event_type.replace("-", ".")


def anon_nodename(hostname: str | None = None, pid: int | None = None) -> str:
    """``gen<pid>@<host>``: how Celery names publishers that are not workers."""
    host = hostname or socket.gethostname()
    return f"gen{os.getpid() if pid is None else pid}@{host}"


def reply_binding(
    oid: str,
    namespace: str = CONTROL_EXCHANGE,
    *,
    ttl: float | None = CONTROL_QUEUE_TTL,
    expires: float | None = CONTROL_QUEUE_EXPIRES,
    exclusive: bool = True,
    durable: bool = False,
) -> Binding:
    """The reply queue of a client: control TTL and expiry, as Celery's ``Control`` sets them."""
    return Binding(
        reply_exchange(namespace),
        routing_key=oid,
        queue=reply_queue_name(oid, namespace),
        exclusive=exclusive,
        durable=durable,
        auto_delete=not durable,
        expires=expires,
        message_ttl=ttl,
    )


def node_binding(
    nodename: str,
    namespace: str = CONTROL_EXCHANGE,
    *,
    ttl: float | None = CONTROL_QUEUE_TTL,
    expires: float | None = CONTROL_QUEUE_EXPIRES,
    exclusive: bool = True,
    durable: bool = False,
) -> Binding:
    """The request queue of a node, bound to the pidbox fanout with routing key ``''``."""
    return Binding(
        pidbox_exchange(namespace),
        routing_key="",
        queue=node_queue_name(nodename, namespace),
        exclusive=exclusive,
        durable=durable,
        auto_delete=not durable,
        expires=expires,
        message_ttl=ttl,
    )


def event_binding(
    node_id: str,
    *,
    exchange: str = EVENT_EXCHANGE,
    prefix: str = EVENT_QUEUE_PREFIX,
    routing_key: str = "#",
    ttl: float | None = EVENT_QUEUE_TTL,
    expires: float | None = EVENT_QUEUE_EXPIRES,
    exclusive: bool = True,
    durable: bool = False,
) -> Binding:
    """An event receiver's queue bound with ``#``, so ``task.multi`` batches arrive too."""
    return Binding(
        event_exchange(exchange),
        routing_key=routing_key,
        queue=event_queue_name(node_id, prefix),
        exclusive=exclusive,
        durable=durable,
        auto_delete=not durable,
        expires=expires,
        message_ttl=ttl,
    )
