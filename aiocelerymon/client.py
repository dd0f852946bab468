"""The entry point: one broker connection, remote control on it (events come next)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from aiocelerymon.control import Control, ControlSettings, Mailbox
from aiocelerymon.events import Events, EventSettings
from aiocelerymon.results import Results, ResultSettings
from aiocelerymon.transports import RetryPolicy, TransportBase, create_transport
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.entities import Exchange, ExchangeKind
from aiocelerymon.wire.task import DEFAULT_QUEUE, task_exchange, task_message

__all__ = ["Client"]


class Client:
    """An async Celery monitoring and control client.

    Keyword arguments carry Celery's setting names and defaults (``broker_transport_options``,
    ``broker_use_ssl``, ``broker_connection_timeout``, ``control_exchange``,
    ``control_queue_*``, ``event_exchange``, ``event_queue_*``, ``event_serializer``,
    ``accept_content``, ``task_serializer``, ``result_backend``,
    ``result_backend_transport_options``, ``database_table_names``/``_schemas``), so a Celery
    app's ``conf`` can be passed through (see :meth:`from_celery_app`). ``None`` for a queue
    TTL/expiry leaves that argument unset.
    """

    def __init__(
        self,
        broker_url: str = "memory://",
        *,
        broker_transport_options: Mapping[str, Any] | None = None,
        broker_use_ssl: bool | Mapping[str, Any] | None = None,
        broker_connection_timeout: float = 4.0,
        control_exchange: str = names.CONTROL_EXCHANGE,
        control_queue_ttl: float | None = names.CONTROL_QUEUE_TTL,
        control_queue_expires: float | None = names.CONTROL_QUEUE_EXPIRES,
        control_queue_exclusive: bool = True,
        control_queue_durable: bool = False,
        accept_content: Iterable[str] | None = None,
        task_serializer: str = "json",
        event_exchange: str = names.EVENT_EXCHANGE,
        event_queue_prefix: str = names.EVENT_QUEUE_PREFIX,
        event_queue_ttl: float | None = names.EVENT_QUEUE_TTL,
        event_queue_expires: float | None = names.EVENT_QUEUE_EXPIRES,
        event_queue_exclusive: bool = True,
        event_queue_durable: bool = False,
        event_serializer: str = "json",
        result_backend: str | None = None,
        result_backend_transport_options: Mapping[str, Any] | None = None,
        database_table_names: Mapping[str, str] | None = None,
        database_table_schemas: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        transport: TransportBase | None = None,
    ) -> None:
        self.transport = transport or create_transport(
            broker_url,
            transport_options=broker_transport_options,
            ssl=broker_use_ssl,
            retry=retry,
            connect_timeout=broker_connection_timeout,
        )
        self.control_settings = ControlSettings(
            control_exchange=control_exchange,
            control_queue_ttl=control_queue_ttl,
            control_queue_expires=control_queue_expires,
            control_queue_exclusive=control_queue_exclusive,
            control_queue_durable=control_queue_durable,
            accept_content=codec.normalize_accept(accept_content),
            task_serializer=task_serializer,
        )
        #: The one Lamport clock of this client (Celery's ``app.clock``): the mailbox, a
        #: :class:`~aiocelerymon.Node`, receivers and dispatchers all tick and adjust it.
        self.clock = LamportClock()
        self.mailbox = Mailbox(self.transport, self.control_settings, self.clock)
        #: Celery's ``app.control``, async.
        self.control = Control(self.mailbox)
        accept = self.control_settings.accept_content
        self.event_settings = EventSettings(
            event_exchange=event_exchange,
            event_queue_prefix=event_queue_prefix,
            event_queue_ttl=event_queue_ttl,
            event_queue_expires=event_queue_expires,
            event_queue_exclusive=event_queue_exclusive,
            event_queue_durable=event_queue_durable,
            event_serializer=event_serializer,
            # Celery's receivers accept the event serializer and json (events/receiver.py).
            accept_content=accept | codec.normalize_accept([event_serializer, "json"]),
        )
        #: Celery's ``app.events``, async.
        self.events = Events(self.transport, self.event_settings, control_exchange, self.clock)
        #: Task results from ``result_backend`` (Celery's ``AsyncResult``, read-only, JSON only).
        self.results = Results(
            ResultSettings(
                result_backend=result_backend,
                result_backend_transport_options=result_backend_transport_options or {},
                database_table_names=database_table_names or {},
                database_table_schemas=database_table_schemas or {},
                connect_timeout=broker_connection_timeout,
            )
        )

    @classmethod
    def from_celery_app(cls, app: Any, **overrides: Any) -> Client:
        """Build from a Celery app's configuration (celery need not be importable otherwise)."""
        conf = app.conf
        settings: dict[str, Any] = {
            "broker_url": conf.broker_url or "amqp://guest@localhost//",
            "broker_transport_options": conf.broker_transport_options or None,
            "broker_use_ssl": conf.broker_use_ssl or None,
            "broker_connection_timeout": conf.broker_connection_timeout,
            "control_exchange": conf.control_exchange,
            "control_queue_ttl": conf.control_queue_ttl,
            "control_queue_expires": conf.control_queue_expires,
            "accept_content": conf.accept_content,
            "task_serializer": conf.task_serializer,
            "event_exchange": conf.event_exchange,
            "event_queue_prefix": conf.event_queue_prefix,
            "event_queue_ttl": conf.event_queue_ttl,
            "event_queue_expires": conf.event_queue_expires,
            "event_serializer": conf.event_serializer,
            # Celery's Settings.result_backend reads CELERY_RESULT_BACKEND first.
            "result_backend": conf.result_backend or None,
            "result_backend_transport_options": conf.get("result_backend_transport_options"),
            "database_table_names": conf.get("database_table_names"),
            "database_table_schemas": conf.get("database_table_schemas"),
        }
        for name in (  # Celery 5.6+
            "control_queue_exclusive",
            "control_queue_durable",
            "event_queue_exclusive",
            "event_queue_durable",
        ):
            value = conf.get(name)
            if value is not None:
                settings[name] = value
        settings.update(overrides)
        return cls(**settings)

    async def connect(self, *, retry: bool = False) -> None:
        """Connect now (otherwise the first call connects).

        With ``retry`` an unreachable broker is retried under the client's ``retry`` policy
        (forever by default; one WARNING per outage) instead of raising ``ConnectError``: for a
        monitor started before its broker, as kombu's ``ensure_connection`` does for Celery's.
        """
        await self.transport.connect(retry=retry)

    async def send_task(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        **options: Any,
    ) -> str:
        """Celery's ``app.send_task``: publish a task by name; returns its id.

        Routed as Celery routes a task with no route configured: to ``queue`` (default
        ``celery``) through the direct exchange of the same name, unless ``exchange`` and
        ``routing_key`` say otherwise. ``options`` are those of
        :func:`aiocelerymon.wire.task.task_message` (``task_id``, ``countdown``, ``eta``,
        ``expires``, ``priority``, ``time_limit``, ...).
        """
        queue = queue or DEFAULT_QUEUE
        options.setdefault("serializer", self.control_settings.task_serializer)
        message = task_message(name, args, kwargs, **options)
        target = task_exchange(exchange if exchange is not None else queue)
        if exchange == "":
            target = Exchange("", ExchangeKind.DIRECT)
        await self.transport.publish(message, target, routing_key or queue)
        return str(message.headers["id"])

    async def aclose(self) -> None:
        """Remove the reply queue and close the connections."""
        try:
            await self.mailbox.aclose()
        finally:
            try:
                await self.transport.aclose()
            finally:
                await self.results.aclose()

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
        return f"<Client {self.transport.url.redacted()} {self.transport.state.value}>"
