"""The node side of Celery's pidbox: join the mailbox under a node name and answer commands.

A :class:`Node` makes any asyncio service show up in ``celery inspect ping``, ``celery status``
and Flower next to the workers, and lets it offer commands of its own. It does what a Celery
worker's pidbox consumer does (kombu ``pidbox.Node.handle_message``/``dispatch``): decode with
the accept list, adjust the clock from header ``clock``, filter by destination or pattern, call
the handler with the request's ``arguments`` as keyword arguments, and send ``{nodename: result}``
to ``reply_to`` with the request's ticket. Unlike the worker, each request runs in a task of its
own, so a slow handler never delays a ``ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import platform
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from aiocelerymon._version import __version__
from aiocelerymon.control._control import Control
from aiocelerymon.control.revoked import RevokedSet
from aiocelerymon.exceptions import (
    AiocelerymonError,
    ClosedError,
    ConnectionLostError,
    ProtocolError,
    ResourceLockedError,
    TransportError,
)
from aiocelerymon.wire import codec, names
from aiocelerymon.wire.entities import Exchange, ExchangeKind
from aiocelerymon.wire.pidbox import destination_matches, reply_message
from aiocelerymon.wire.rate import parse_rate

if TYPE_CHECKING:
    from aiocelerymon.control._mailbox import ControlSettings, Mailbox
    from aiocelerymon.transports import Subscription, Transport
    from aiocelerymon.wire.clock import LamportClock
    from aiocelerymon.wire.entities import Binding, Delivery

__all__ = ["HeartbeatSender", "Node", "NodeClient", "NodeNameInUseError", "queue_info"]

log = logging.getLogger("aiocelerymon.control.node")

H = TypeVar("H", bound=Callable[..., Any])

#: A value, or a zero-argument function (sync or async) computing it on every request.
Source = Any

#: Celery's ``registered`` default attributes (celery/worker/control.py DEFAULT_TASK_INFO_ITEMS).
_DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")
#: Celery's ``worker_prefetch_multiplier`` default: prefetch_count = multiplier x concurrency.
PREFETCH_MULTIPLIER = 4
#: Celery's ``broker_heartbeat`` default, which a worker reports whatever the transport.
_BROKER_HEARTBEAT = 120.0
#: ``broker_transport_options`` keys never reported (stats, conf): they may hold secrets.
_SECRET = re.compile(r"pass|secret|token|credential|auth", re.IGNORECASE)
#: The request being handled (for handlers that log who asked).
_request: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("aiocelerymon_request")


class NodeNameInUseError(AiocelerymonError):
    """Another node already answers under this name (Celery: "A node named X is already using
    this process mailbox!").

    Attributes:
        nodename: the contested name.
    """

    def __init__(self, nodename: str, how: str) -> None:
        self.nodename = nodename
        super().__init__(f"a node named {nodename!r} is already using this mailbox ({how})")


class NodeClient(Protocol):
    """What a :class:`Node` uses of its client; :class:`aiocelerymon.Client` provides it."""

    @property
    def transport(self) -> Transport:
        """The broker connection the node subscribes and replies on."""
        ...

    @property
    def control_settings(self) -> ControlSettings:
        """Namespace, node queue flags, accept list and serializer."""
        ...

    @property
    def mailbox(self) -> Mailbox:
        """The client's mailbox: its Lamport clock is shared, as one Celery app has one clock."""
        ...


class HeartbeatSender(Protocol):
    """What a :class:`Node` needs of an event dispatcher: :class:`~aiocelerymon.EventDispatcher`."""

    async def heartbeat(self) -> None:
        """Send a ``worker-heartbeat`` event now."""
        ...


def queue_info(
    name: str,
    exchange: str | None = None,
    exchange_type: str | None = None,
    routing_key: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A task queue as a worker's ``active_queues`` lists it (kombu ``Queue.as_dict(recurse=
    True)``), with Celery's ``add_consumer`` defaults: exchange and routing key named after the
    queue, a direct durable exchange. ``options`` override any field (``durable``, ...).
    """
    exchange_options = options.pop("exchange_options", None) or {}
    info: dict[str, Any] = {
        "name": name,
        "exchange": {
            "name": name if exchange is None else exchange,
            "type": exchange_type or "direct",
            "arguments": None,
            "durable": True,
            "passive": False,
            "auto_delete": False,
            "delivery_mode": None,
            "no_declare": False,
            **exchange_options,
        },
        "routing_key": name if routing_key is None else routing_key,
        "queue_arguments": None,
        "binding_arguments": None,
        "consumer_arguments": None,
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "no_ack": False,
        "alias": None,
        "bindings": [],
        "no_declare": None,
        "expires": None,
        "message_ttl": None,
        "max_length": None,
        "max_length_bytes": None,
        "max_priority": None,
    }
    info.update((k, v) for k, v in options.items() if k in info)
    return info


def _public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Transport options without anything that may be a secret (nested mappings too)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(key, str) and _SECRET.search(key):
            continue
        out[key] = _public_options(value) if isinstance(value, Mapping) else value
    return out


def _masked_url(url: Any) -> str:
    """The broker URL as a worker's ``conf`` shows it: any password (or none) as ``********``."""
    text: str = url.redacted()
    if url.password is not None:
        return text.replace(":**@", ":********@", 1)
    return text


def _jsonable(value: Any) -> Any:
    """Celery's ``jsonify(..., unknown_type_filter=safe_repr)`` for ``conf``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {
            k: _jsonable(v)
            for k, v in value.items()
            if isinstance(k, str) and not k.startswith("__")
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return repr(value)


class _Shutdown(Exception):  # noqa: N818 - internal control flow, like Celery's SystemExit
    """Raised by the ``shutdown`` handler: stop the node and send no reply."""


@dataclass(frozen=True, slots=True)
class _Command:
    handler: Callable[..., Any]
    signature: inspect.Signature


async def _resolve(source: Source) -> Any:
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    return value


class Node:
    """A pidbox node: answers Celery remote-control commands under ``nodename``.

    Args:
        client: the client whose connection, control settings and clock the node uses.
        nodename: the name to answer as, ``name@host`` like a worker's ``-n``.
        registered: task names for ``registered``; a mapping ``{name: {attr: value}}`` also
            answers ``taskinfoitems`` (``rate_limit`` ...) the way a worker does.
        active: request-info objects for ``active``.
        reserved: request-info objects for ``reserved``.
        scheduled: ``{"eta", "priority", "request"}`` objects for ``scheduled``.
        revoked: task ids revoked already (added to :attr:`revoked`); a function instead
            lists more ids for ``revoked`` and ``hello`` on every request.
        stats: extra ``stats`` fields, merged over the built-in ones (e.g. ``total``).
        queues: the task queues the service consumes, as names or :func:`queue_info`
            arguments, for ``active_queues`` (Flower's Queues tab).
        config: Celery settings for ``conf`` (Flower's Config tab), over those the node knows
            from its client (broker URL with the password masked, exchanges, serializers).
        pool_size: the service's work concurrency (``stats.pool``); ``pool_grow`` and
            ``pool_shrink`` change :attr:`pool_size`.
        prefetch_multiplier: ``stats.prefetch_count`` is this times ``pool_size``.
        dispatcher: the service's event dispatcher; the ``heartbeat`` command then sends a
            heartbeat event at once, as a worker does.
        on_terminate: ``on_terminate(task_id, signal_name)`` for each running task (listed by
            ``active``/``reserved``) that a ``revoke --terminate`` names.
        concurrency: requests handled at once; further requests wait to be read.
        allow_shutdown: obey ``shutdown`` (stop, no reply, as a worker does); otherwise refuse
            it with an error reply.
        unique_check_timeout: before joining, ping our own name for up to this many seconds
            and refuse to start if anyone answers (None: skip; then only an exclusive queue
            held by another connection, AMQP or memory, reveals a duplicate).

    Every data argument may be a value or a zero-argument function, sync or async, evaluated
    per request. Custom commands are added with :meth:`command` or :meth:`register`.

    The node also answers a worker's control commands and keeps their effect where the
    service reads it: ``revoke``/``terminate``/``revoke_by_stamped_headers`` (:attr:`revoked`,
    :meth:`is_revoked`, ``on_terminate``), ``rate_limit``/``time_limit`` (:attr:`rate_limits`,
    :attr:`time_limits`), ``pool_grow``/``pool_shrink`` (:attr:`pool_size`) and
    ``add_consumer``/``cancel_consumer`` (:attr:`queues`), with a worker's replies.
    """

    def __init__(
        self,
        client: NodeClient,
        nodename: str,
        *,
        registered: Source = (),
        active: Source = (),
        reserved: Source = (),
        scheduled: Source = (),
        revoked: Source = (),
        stats: Source = None,
        queues: Iterable[str | Mapping[str, Any]] = (),
        config: Mapping[str, Any] | None = None,
        pool_size: int = 1,
        prefetch_multiplier: int = PREFETCH_MULTIPLIER,
        dispatcher: HeartbeatSender | None = None,
        on_terminate: Callable[[str, str], Any] | None = None,
        concurrency: int = 64,
        allow_shutdown: bool = False,
        unique_check_timeout: float | None = 1.0,
    ) -> None:
        if "@" not in nodename:
            # Celery's CLI and Flower split node names on "@" (celery/utils/nodenames.py).
            raise ValueError(f"node name must look like name@host, got {nodename!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if prefetch_multiplier < 0:
            raise ValueError("prefetch_multiplier must not be negative")
        self.nodename = nodename
        self.client = client
        self.concurrency = concurrency
        self.allow_shutdown = allow_shutdown
        self.unique_check_timeout = unique_check_timeout
        #: The service's work concurrency, as ``stats.pool.max-concurrency``; ``pool_grow`` /
        #: ``pool_shrink`` change it (the service reads it).
        self.pool_size = pool_size
        #: ``stats.prefetch_count``: ``prefetch_multiplier * pool_size``, moved by grow/shrink
        #: as a worker's consumer does.
        self.prefetch_count = prefetch_multiplier * pool_size
        self.prefetch_multiplier = prefetch_multiplier
        #: With a dispatcher the ``heartbeat`` command sends a heartbeat event at once.
        self.dispatcher = dispatcher
        #: Called as ``on_terminate(task_id, signal_name)`` (sync or async) for every task a
        #: ``revoke(..., terminate=True)`` names that ``active``/``reserved`` lists.
        self.on_terminate = on_terminate
        #: Revoked task ids, with a worker's limits and expiry (see :meth:`is_revoked`).
        self.revoked = RevokedSet()
        #: ``revoke_by_stamped_headers``: stamp header -> revoked values, as a worker keeps.
        self.revoked_stamps: dict[str, list[Any]] = {}
        #: Rate limits set by ``rate_limit`` (initially those of ``registered``), by task name.
        self.rate_limits: dict[str, Any] = {}
        #: ``(soft, hard)`` time limits set by ``time_limit``, by task name.
        self.time_limits: dict[str, tuple[Any, Any]] = {}
        #: Task queues the node consumes from, as ``active_queues`` lists them, by name;
        #: ``add_consumer`` / ``cancel_consumer`` change it.
        self.queues: dict[str, dict[str, Any]] = {}
        for queue in queues:
            info = queue_info(queue) if isinstance(queue, str) else queue_info(**queue)
            self.queues[info["name"]] = info
        self.config = dict(config) if config is not None else None
        if isinstance(registered, Mapping):
            self.rate_limits = {
                name: (attrs or {}).get("rate_limit") for name, attrs in registered.items()
            }
        if callable(revoked):
            revoked_source: Source = revoked
        else:
            self.revoked.update(revoked)
            revoked_source = ()
        #: Requests that could not be decoded or were not pidbox requests (logged, dropped).
        self.malformed = 0
        #: Requests addressed to this node and dispatched (casts included).
        self.handled = 0
        #: Whether ``enable_events`` was received last (this node sends no task events itself).
        self.task_events = False
        self._sources: dict[str, Source] = {
            "registered": registered,
            "active": active,
            "reserved": reserved,
            "scheduled": scheduled,
            "revoked": revoked_source,
            "stats": stats,
        }
        self._commands: dict[str, _Command] = {}
        self._install_builtins()
        self._state = "IDLE"
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._closer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._error: BaseException | None = None
        self._started_at = 0.0

    # -- registry ----------------------------------------------------------------------------

    def register(self, name: str, handler: Callable[..., Any]) -> None:
        """Answer command ``name`` with ``handler(**arguments)`` (sync or async).

        The return value is the reply (any JSON value; by Celery's convention ``{"ok": ...}``
        or ``{"error": ...}``). A built-in of the same name is replaced.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"command name must be a non-empty string, got {name!r}")
        self._commands[name] = _Command(handler, inspect.signature(handler))

    def command(self, name: str | None = None) -> Callable[[H], H]:
        """Decorator form of :meth:`register`; the name defaults to the function's."""

        def decorate(handler: H) -> H:
            self.register(name or handler.__name__, handler)
            return handler

        return decorate

    @property
    def commands(self) -> frozenset[str]:
        """Names this node answers, built-ins and aliases included."""
        return frozenset(self._commands)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def clock(self) -> LamportClock:
        """The Lamport clock (the client's: one process, one clock, as in a Celery app)."""
        return self.client.mailbox.clock

    def is_revoked(self, task_id: str, stamps: Mapping[str, Any] | None = None) -> bool:
        """Whether ``task_id`` was revoked (or, given its stamped headers, one of its stamps):
        what a worker checks before it runs a task and when it finishes.
        """
        if task_id in self.revoked:
            return True
        if stamps and self.revoked_stamps:
            for header, values in self.revoked_stamps.items():
                if header in stamps:
                    have = stamps[header]
                    have = have if isinstance(have, (list, tuple, set)) else [have]
                    if any(v in values for v in have):
                        return True
        return False

    @property
    def serving(self) -> bool:
        """True between a successful :meth:`start` and the node stopping."""
        return self._state == "SERVING"

    async def start(self) -> None:
        """Join the mailbox and answer in a background task owned by the node.

        Raises:
            NodeNameInUseError: another node answers as ``nodename``.
            ClosedError: the node was closed (a node cannot be restarted).
            TransportError: the broker could not be reached or refused the node queue.
        """
        if self._state == "SERVING":
            return
        if self._state != "IDLE":
            raise ClosedError(f"{self!r} is closed")
        self._state = "STARTING"
        try:
            await self._check_unique()
            sub = self.client.transport.subscribe(self._binding())
            try:
                await sub.__aenter__()
            except ResourceLockedError as exc:
                # AMQP 405 on the exclusive node queue: what kombu's Node.Consumer turns into
                # "A node named X is already using this process mailbox!".
                raise NodeNameInUseError(self.nodename, "its queue is locked") from exc
        except BaseException:
            self._state = "IDLE"
            raise
        self._sub = sub
        self._started_at = time.monotonic()
        self._state = "SERVING"
        self._reader = asyncio.get_running_loop().create_task(
            self._serve(sub), name=f"aiocelerymon-node-{self.nodename}"
        )

    async def aclose(self) -> None:
        """Leave the mailbox (the node queue goes) and cancel requests still being handled."""
        if self._state in ("CLOSING", "CLOSED"):
            await self._closed.wait()
            return
        self._state = "CLOSING"
        current = asyncio.current_task()
        sub, self._sub = self._sub, None
        reader, self._reader = self._reader, None
        try:
            if sub is not None:
                await sub.aclose()
            if reader is not None and reader is not current:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._state = "CLOSED"
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the node stopped: :meth:`aclose`, an obeyed ``shutdown``, or a lost broker.

        Raises:
            ConnectionLostError: the node stopped because the transport gave up reconnecting.
        """
        await self._closed.wait()
        if self._error is not None:
            raise self._error

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
        url = self.client.transport.url.redacted()
        return f"<Node {self.nodename!r} {self._state} on {url}>"

    # -- machinery ---------------------------------------------------------------------------

    def _binding(self) -> Binding:
        s = self.client.control_settings
        return names.node_binding(
            self.nodename,
            s.control_exchange,
            ttl=s.control_queue_ttl,
            expires=s.control_queue_expires,
            exclusive=s.control_queue_exclusive,
            durable=s.control_queue_durable,
        )

    async def _check_unique(self) -> None:
        # Redis fanout and non-exclusive AMQP queues let two nodes share a name silently (Celery
        # only notices afterwards, with DuplicateNodenameWarning on the client side), so ask.
        timeout = self.unique_check_timeout
        if timeout is None:
            return
        replies = await Control(self.client.mailbox).ping(
            destination=[self.nodename], timeout=timeout
        )
        if replies:
            raise NodeNameInUseError(self.nodename, "it answered a ping")

    def _stop_soon(self) -> None:
        if self._closer is None and self._state == "SERVING":
            self._closer = asyncio.get_running_loop().create_task(
                self.aclose(), name=f"aiocelerymon-node-stop-{self.nodename}"
            )

    async def _serve(self, sub: Subscription) -> None:
        try:
            async for delivery in sub:
                body = self._accept(delivery)
                if body is None:
                    continue
                # Bounded: at the limit we stop reading and the broker queues for us.
                await self._slots.acquire()
                task = asyncio.get_running_loop().create_task(self._handle(body))
                self._tasks.add(task)
                task.add_done_callback(self._finished)
        except ConnectionLostError as exc:
            log.error("node %s lost its broker for good: %s", self.nodename, exc)
            self._error = exc
        # Ended without aclose() (the transport gave up or was closed under us): stop for good.
        self._stop_soon()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    def _accept(self, delivery: Delivery) -> dict[str, Any] | None:
        """Decode, adjust the clock and filter; the body to dispatch, or None."""
        try:
            body = codec.decode(
                delivery.body,
                delivery.content_type,
                delivery.content_encoding,
                self.client.control_settings.accept_content,
            )
        except ProtocolError as exc:
            # Celery logs "Can't decode message body" and drops it; so do we, counting it.
            self.malformed += 1
            log.warning("node %s dropped an undecodable request: %s", self.nodename, exc)
            return None
        if not isinstance(body, dict):
            self.malformed += 1
            log.warning(
                "node %s dropped a request that is not an object: %.100r", self.nodename, body
            )
            return None
        # kombu adjusts the clock for every decoded request, before the destination filter.
        with contextlib.suppress(TypeError, ValueError):
            self.clock.adjust(int(delivery.headers.get("clock") or 0))
        try:
            wanted = destination_matches(self.nodename, body)
        except (TypeError, ValueError) as exc:  # a destination that is no list, a bad regex
            self.malformed += 1
            log.warning("node %s dropped a request with a bad address: %r", self.nodename, exc)
            return None
        return body if wanted else None

    async def _handle(self, body: dict[str, Any]) -> None:
        self.handled += 1
        _request.set(body)  # this task's own context: handlers may read who asked
        method = body.get("method")
        reply_to = body.get("reply_to")
        try:
            result = await self._dispatch(method, body.get("arguments"))
        except _Shutdown:
            self._stop_soon()
            return  # like SystemExit in a worker: no reply
        if reply_to:
            await self._reply(result, reply_to, body.get("ticket"))

    async def _dispatch(self, method: Any, arguments: Any) -> Any:
        """The reply value for one request; every failure becomes ``{"error": repr(exc)}``."""
        command = self._commands.get(method) if isinstance(method, str) else None
        if command is None:
            # Celery: ``handlers[method]`` raises KeyError; unknown names are common (Flower's
            # revoke casts reach every node), so this is not worth more than a debug line.
            log.debug("node %s has no command %r", self.nodename, method)
            return {"error": repr(KeyError(method))}
        if arguments is None:
            arguments = {}
        try:
            if not isinstance(arguments, dict):
                raise TypeError(f"arguments must be an object, not {type(arguments).__name__}")
            try:
                # Bound before the call, so a TypeError is always the caller's mistake.
                bound = command.signature.bind(**arguments)
            except TypeError as exc:
                raise TypeError(f"{method}() {exc}") from None
            result = command.handler(*bound.args, **bound.kwargs)
            if inspect.isawaitable(result):
                result = await result
        except (asyncio.CancelledError, _Shutdown):
            raise
        except Exception as exc:
            log.error("node %s: command %r failed: %r", self.nodename, method, exc, exc_info=True)
            return {"error": repr(exc)}
        return result

    async def _reply(self, result: Any, reply_to: Any, ticket: Any) -> None:
        if not (
            isinstance(reply_to, dict)
            and isinstance(reply_to.get("exchange"), str)
            and isinstance(reply_to.get("routing_key"), str)
        ):
            self.malformed += 1
            log.warning("node %s cannot reply to %.100r", self.nodename, reply_to)
            return
        serializer = self.client.control_settings.task_serializer
        try:
            message = reply_message(
                self.nodename, result, ticket=ticket, clock=self.clock.forward(),
                serializer=serializer,
            )  # fmt: skip
        except (TypeError, ValueError) as exc:  # a handler returned something unserializable
            log.error("node %s: reply not serializable: %r", self.nodename, exc)
            message = reply_message(
                self.nodename, {"error": repr(exc)}, ticket=ticket, clock=self.clock.value,
                serializer=serializer,
            )  # fmt: skip
        # Declared as kombu's Mailbox._publish_reply declares it: direct, transient. An empty
        # name is the default exchange (routing key = queue name), which adapters never declare.
        exchange = Exchange(reply_to["exchange"], ExchangeKind.DIRECT, durable=False)
        try:
            await self.client.transport.publish(message, exchange, reply_to["routing_key"])
        except (TransportError, ClosedError) as exc:
            log.warning("node %s could not send its reply: %s", self.nodename, exc)

    # -- built-in commands (celery/worker/control.py names, arguments and reply shapes) --------

    def _install_builtins(self) -> None:
        builtins: dict[str, Callable[..., Any]] = {
            "ping": self._ping,
            "clock": self._clock,
            "stats": self._stats,
            "report": self._report,
            "registered": self._registered,
            "active": self._active,
            "reserved": self._listing("reserved"),
            "scheduled": self._listing("scheduled"),
            "revoked": self._revoked,
            "active_queues": self._active_queues,
            "query_task": self._query_task,
            "conf": self._conf,
            "hello": self._hello,
            "heartbeat": self._heartbeat,
            "enable_events": self._enable_events,
            "disable_events": self._disable_events,
            "shutdown": self._shutdown,
            "revoke": self._revoke,
            "revoke_by_stamped_headers": self._revoke_by_stamped_headers,
            "terminate": self._terminate,
            "rate_limit": self._rate_limit,
            "time_limit": self._time_limit,
            "pool_grow": self._pool_grow,
            "pool_shrink": self._pool_shrink,
            "add_consumer": self._add_consumer,
            "cancel_consumer": self._cancel_consumer,
        }
        # Celery's backward-compatible aliases are callable over the wire too.
        aliases = {
            "dump_active": "active",
            "dump_reserved": "reserved",
            "dump_schedule": "scheduled",
            "dump_revoked": "revoked",
            "dump_tasks": "registered",
            "dump_conf": "conf",
        }
        for name, handler in builtins.items():
            self.register(name, handler)
        for alias, name in aliases.items():
            self.register(alias, builtins[name])

    async def _ping(self, **kwargs: Any) -> Any:
        return {"ok": "pong"}

    async def _clock(self, **kwargs: Any) -> Any:
        return {"clock": self.clock.value}

    async def _stats(self, **kwargs: Any) -> Any:
        transport = self.client.transport
        url = transport.url
        pid = os.getpid()
        options = getattr(transport, "transport_options", None) or {}
        heartbeat = options.get("heartbeat", getattr(transport, "_heartbeat", _BROKER_HEARTBEAT))
        active = len(list(await _resolve(self._sources["active"])))
        info: dict[str, Any] = {
            "total": {},
            "pid": pid,
            "clock": str(self.clock.value),  # a string in Celery (WorkController.info)
            "uptime": round(time.monotonic() - self._started_at),
            # The keys of a prefork worker's pool (celery/concurrency/prefork.py _get_info):
            # the node has no child processes, so no writes to them.
            "pool": {
                "implementation": f"{__name__}:Node",
                "max-concurrency": self.pool_size,
                "processes": [pid],
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": False,
                "timeouts": [0, 0],
                "writes": {
                    "total": 0,
                    "avg": "0.00",
                    "all": "",
                    "raw": "",
                    "strategy": "fair",
                    "inqueues": {"total": self.pool_size, "active": active},
                },
            },
            # kombu Connection.info() minus the password, as Celery's consumer reports it.
            "broker": {
                "hostname": url.hostname,
                "userid": url.username,
                "virtual_host": url.virtual_host,
                "port": url.port,
                "insist": False,
                "ssl": url.ssl,
                "transport": url.scheme,
                "connect_timeout": getattr(transport, "connect_timeout", None),
                "transport_options": _public_options(options),
                "login_method": None,
                "uri_prefix": None,
                "heartbeat": float(heartbeat) if heartbeat is not None else None,
                "failover_strategy": "round-robin",
                "alternates": [],
                "credential_provider": None,
            },
            "prefetch_count": self.prefetch_count,
            "rusage": _rusage(),
        }
        extra = await _resolve(self._sources["stats"])
        if extra:
            info.update(extra)
        return info

    async def _report(self) -> Any:
        arch = ", ".join(filter(None, platform.architecture()))
        url = self.client.transport.url
        text = (
            f"software -> aiocelerymon:{__version__} py:{platform.python_version()}\n"
            f"platform -> system:{platform.system()} arch:{arch}\n"
            f"            kernel version:{platform.release()} "
            f"imp:{platform.python_implementation()}\n"
            f"node     -> {self.nodename} ({__name__}:Node, not a Celery worker)\n"
            f"settings -> transport:{url.scheme} "
            f"control_exchange:{self.client.control_settings.control_exchange}\n"
        )
        return {"ok": text}

    async def _registered(
        self, taskinfoitems: Iterable[str] | None = None, builtins: bool = False, **kwargs: Any
    ) -> Any:
        tasks = await _resolve(self._sources["registered"])
        # Celery hides its own celery.* tasks unless asked, and (5.7) private attributes.
        task_names = [n for n in tasks if builtins or not str(n).startswith("celery.")]
        if not isinstance(tasks, Mapping):
            return sorted(map(str, task_names))
        limits = self.rate_limits
        items = [
            item
            for item in (taskinfoitems or _DEFAULT_TASK_INFO_ITEMS)
            if isinstance(item, str) and not item.startswith("_")
        ]
        out = []
        for name in task_names:
            attrs = dict(tasks[name] or {})
            if name in limits:  # set by rate_limit since
                attrs["rate_limit"] = limits[name]
            fields = [f"{k}={attrs[k]}" for k in items if attrs.get(k) is not None]
            out.append(f"{name} [{' '.join(fields)}]" if fields else str(name))
        return sorted(out)

    async def _active(self, safe: bool | None = None, **kwargs: Any) -> Any:
        return list(await _resolve(self._sources["active"]))

    def _listing(self, source: str) -> Callable[..., Awaitable[Any]]:
        async def listing(**kwargs: Any) -> Any:
            return list(await _resolve(self._sources[source]))

        return listing

    async def _active_queues(self) -> Any:
        # The task queues declared or added; the pidbox queue is not listed by workers either.
        return [dict(info) for info in self.queues.values()]

    async def _revoked(self, **kwargs: Any) -> Any:
        ids = list(self.revoked)
        extra = await _resolve(self._sources["revoked"])
        if extra:
            known = set(ids)
            ids.extend(i for i in extra if i not in known)
        return ids

    async def _query_task(self, ids: Iterable[str] | str | None = None, **kwargs: Any) -> Any:
        wanted = {ids} if isinstance(ids, str) else set(ids or ())
        found: dict[str, Any] = {}
        # Celery's states; "scheduled" only exists in 5.7's reply, the others in every 5.x.
        for state in ("scheduled", "reserved", "active"):
            for item in await _resolve(self._sources[state]):
                info = item.get("request", item) if state == "scheduled" else item
                task_id = info.get("id") if isinstance(info, Mapping) else None
                if task_id in wanted:
                    found[task_id] = [state, info]
        return found

    def _known_config(self) -> dict[str, Any]:
        """The Celery settings this node knows from its client, under Celery's names."""
        transport = self.client.transport
        s = self.client.control_settings
        options = getattr(transport, "transport_options", None) or {}
        known: dict[str, Any] = {
            "broker_url": _masked_url(transport.url),
            "control_exchange": s.control_exchange,
            "accept_content": sorted(s.accept_content),
            "task_serializer": s.task_serializer,
            "worker_concurrency": self.pool_size,
            "worker_prefetch_multiplier": self.prefetch_multiplier,
        }
        if options:
            known["broker_transport_options"] = _public_options(options)
        return known

    async def _conf(self, with_defaults: bool = False, **kwargs: Any) -> Any:
        # A worker answers the settings changed from the defaults (all of them with
        # with_defaults); here: what the node knows, then what the service declared.
        conf = self._known_config()
        if self.config:
            conf.update(self.config)
        return _jsonable(conf)

    async def _hello(self, from_node: str, revoked: Any = None, **kwargs: Any) -> Any:
        if from_node == self.nodename:
            return None  # mingle asking itself: Celery answers nothing
        log.info("node %s: sync with %s", self.nodename, from_node)
        if revoked:
            # Celery's merge_revoked: only the ids, stamped with our clock.
            self.revoked.update(str(i) for i in revoked)
        self.revoked.purge()  # do not send expired ids
        return {
            "revoked": await self._revoked(),
            "clock": self.clock.forward(),
        }

    async def _heartbeat(self) -> Any:
        # A worker with an event dispatcher sends a heartbeat event at once (Flower and
        # `events --dump` cast this at start); the reply is None either way.
        if self.dispatcher is not None:
            await self.dispatcher.heartbeat()
        return None

    # -- control commands of a worker that runs tasks -----------------------------------------

    async def _requests(self) -> set[str]:
        """Ids the node is working on or holds (Celery: ``worker_state.requests``)."""
        ids: set[str] = set()
        for source in ("active", "reserved"):
            for item in await _resolve(self._sources[source]):
                task_id = item.get("id") if isinstance(item, Mapping) else None
                if isinstance(task_id, str):
                    ids.add(task_id)
        return ids

    async def _terminate_ids(self, task_ids: Iterable[str], signal: Any) -> list[str]:
        signame = str(signal or "SIGTERM").upper()
        if not signame.startswith("SIG") and not signame.isdigit():
            signame = f"SIG{signame}"
        running = await self._requests()
        terminated = [tid for tid in task_ids if tid in running]
        on_terminate = self.on_terminate
        for task_id in terminated:
            log.info("node %s: terminating %s (%s)", self.nodename, task_id, signame)
            if on_terminate is not None:
                outcome = on_terminate(task_id, signame)
                if inspect.isawaitable(outcome):
                    await outcome
        return terminated

    async def _revoke(
        self, task_id: Any = None, terminate: bool = False, signal: Any = None, **kwargs: Any
    ) -> Any:
        # celery/worker/control.py revoke: the ids as a set, reply text included.
        if task_id is None:
            ids: set[str] = set()
        elif isinstance(task_id, (list, tuple, set)):
            ids = {str(i) for i in task_id}
        else:
            ids = {str(task_id)}
        self.revoked.update(ids)
        if terminate:
            terminated = await self._terminate_ids(ids, signal)
            if not terminated:
                return {"ok": "terminate: tasks unknown"}
            return {"ok": f"terminate: {', '.join(terminated)}"}
        log.info("node %s: tasks flagged as revoked: %s", self.nodename, ", ".join(ids))
        return {"ok": f"tasks {ids} flagged as revoked"}

    async def _terminate(self, signal: Any, task_id: Any, **kwargs: Any) -> Any:
        return await self._revoke(task_id, terminate=True, signal=signal)

    async def _revoke_by_stamped_headers(
        self, headers: Any, terminate: bool = False, signal: Any = None, **kwargs: Any
    ) -> Any:
        if isinstance(headers, list):  # ["key=value", ...], as the CLI sends them
            headers = dict(str(h).split("=", 1) for h in headers)
        if not isinstance(headers, Mapping):
            raise TypeError("headers must be a mapping or a list of key=value")
        for header, stamps in headers.items():
            values = stamps if isinstance(stamps, (list, tuple)) else [stamps]
            self.revoked_stamps[header] = [*self.revoked_stamps.get(header, []), *values]
        if not terminate:
            return {"ok": f"headers {headers} flagged as revoked, but not terminated"}
        # The node keeps no stamps of its requests: the service terminates via is_revoked.
        return {"ok": f"headers {headers} were not terminated"}

    async def _known_task(self, task_name: Any) -> bool:
        return task_name in set(await _resolve(self._sources["registered"]))

    async def _rate_limit(self, task_name: Any, rate_limit: Any, **kwargs: Any) -> Any:
        try:
            parse_rate(rate_limit)
        except ValueError as exc:  # Celery's reply names a ValueError
            return {"error": f"Invalid rate limit string: {ValueError(str(exc))!r}"}
        if not await self._known_task(task_name):
            log.error("node %s: rate limit attempt for unknown task %s", self.nodename, task_name)
            return {"error": "unknown task"}
        self.rate_limits[task_name] = rate_limit
        if not rate_limit:
            return {"ok": "rate limit disabled successfully"}
        return {"ok": "new rate limit set successfully"}

    async def _time_limit(
        self, task_name: Any = None, hard: Any = None, soft: Any = None, **kwargs: Any
    ) -> Any:
        if not await self._known_task(task_name):
            return {"error": "unknown task"}
        self.time_limits[task_name] = (soft, hard)
        return {"ok": "time limits set successfully"}

    async def _pool_grow(self, n: Any = 1, **kwargs: Any) -> Any:
        n = int(n)
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        self.pool_size += n
        self.prefetch_count += n * self.prefetch_multiplier
        return {"ok": "pool will grow"}

    async def _pool_shrink(self, n: Any = 1, **kwargs: Any) -> Any:
        n = int(n)
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        if self.pool_size - n < 1:
            raise ValueError(f"Can't shrink pool below 1 (size {self.pool_size})")
        self.pool_size -= n
        self.prefetch_count = max(0, self.prefetch_count - n * self.prefetch_multiplier)
        return {"ok": "pool will shrink"}

    async def _add_consumer(
        self,
        queue: Any,
        exchange: Any = None,
        exchange_type: Any = None,
        routing_key: Any = None,
        **options: Any,
    ) -> Any:
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"queue must be a non-empty name, got {queue!r}")
        if queue not in self.queues:
            self.queues[queue] = queue_info(queue, exchange, exchange_type, routing_key, **options)
            log.info("node %s: started consuming from %s", self.nodename, queue)
        return {"ok": f"add consumer {queue}"}

    async def _cancel_consumer(self, queue: Any, **kwargs: Any) -> Any:
        self.queues.pop(queue, None)
        return {"ok": f"no longer consuming from {queue}"}

    async def _enable_events(self) -> Any:
        if self.task_events:
            return {"ok": "task events already enabled"}
        self.task_events = True
        return {"ok": "task events enabled"}

    async def _disable_events(self) -> Any:
        if not self.task_events:
            return {"ok": "task events already disabled"}
        self.task_events = False
        return {"ok": "task events disabled"}

    async def _shutdown(self, msg: str = "Got shutdown from remote", **kwargs: Any) -> Any:
        if not self.allow_shutdown:
            request = _request.get({})
            log.warning(
                "node %s refused a remote shutdown (%s) from reply_to %r",
                self.nodename, msg, request.get("reply_to"),
            )  # fmt: skip
            return {"error": f"shutdown refused: {self.nodename} does not allow remote shutdown"}
        log.warning("node %s: %s", self.nodename, msg)
        raise _Shutdown


#: ``resource.getrusage`` fields, reported without their ``ru_`` prefix as Celery does.
_RUSAGE_FIELDS = (
    "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
    "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw",
)  # fmt: skip


def _rusage() -> Any:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows; Celery reports "N/A" there too
        return "N/A"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {name: getattr(usage, f"ru_{name}") for name in _RUSAGE_FIELDS}
