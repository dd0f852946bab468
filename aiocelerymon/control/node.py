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
import inspect
import logging
import os
import platform
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from aiocelerymon._version import __version__
from aiocelerymon.control._control import Control
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

if TYPE_CHECKING:
    from aiocelerymon.control._mailbox import ControlSettings, Mailbox
    from aiocelerymon.transports import Subscription, Transport
    from aiocelerymon.wire.clock import LamportClock
    from aiocelerymon.wire.entities import Binding, Delivery

__all__ = ["Node", "NodeClient", "NodeNameInUseError"]

log = logging.getLogger("aiocelerymon.control.node")

H = TypeVar("H", bound=Callable[..., Any])

#: A value, or a zero-argument function (sync or async) computing it on every request.
Source = Any

#: Celery's ``registered`` default attributes (celery/worker/control.py DEFAULT_TASK_INFO_ITEMS).
_DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")


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
        revoked: task ids for ``revoked`` (and ``hello``).
        stats: extra ``stats`` fields, merged over the built-in ones (e.g. ``total``).
        concurrency: requests handled at once; further requests wait to be read.
        allow_shutdown: obey ``shutdown`` (stop, no reply, as a worker does); otherwise refuse
            it with an error reply.
        unique_check_timeout: before joining, ping our own name for up to this many seconds
            and refuse to start if anyone answers (None: skip; then only an exclusive queue
            held by another connection, AMQP or memory, reveals a duplicate).

    Every data argument may be a value or a zero-argument function, sync or async, evaluated
    per request. Custom commands are added with :meth:`command` or :meth:`register`.
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
        concurrency: int = 64,
        allow_shutdown: bool = False,
        unique_check_timeout: float | None = 1.0,
    ) -> None:
        if "@" not in nodename:
            # Celery's CLI and Flower split node names on "@" (celery/utils/nodenames.py).
            raise ValueError(f"node name must look like name@host, got {nodename!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.nodename = nodename
        self.client = client
        self.concurrency = concurrency
        self.allow_shutdown = allow_shutdown
        self.unique_check_timeout = unique_check_timeout
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
            "revoked": revoked,
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
            "revoked": self._listing("revoked"),
            "active_queues": self._active_queues,
            "query_task": self._query_task,
            "conf": self._conf,
            "hello": self._hello,
            "heartbeat": self._heartbeat,
            "enable_events": self._enable_events,
            "disable_events": self._disable_events,
            "shutdown": self._shutdown,
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
        info: dict[str, Any] = {
            "total": {},
            "pid": os.getpid(),
            "clock": str(self.clock.value),  # a string in Celery (WorkController.info)
            "uptime": round(time.monotonic() - self._started_at),
            "pool": {
                "implementation": f"{__name__}:Node",
                "max-concurrency": self.concurrency,
                "processes": [os.getpid()],
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
                "uri_prefix": None,
                "alternates": [],
            },
            "prefetch_count": 0,
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
        items = [
            item
            for item in (taskinfoitems or _DEFAULT_TASK_INFO_ITEMS)
            if isinstance(item, str) and not item.startswith("_")
        ]
        out = []
        for name in task_names:
            attrs = tasks[name] or {}
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
        # The node consumes no task queue; its pidbox queue is not listed by workers either.
        return []

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

    async def _conf(self, with_defaults: bool = False, **kwargs: Any) -> Any:
        # No Celery configuration to show; Flower asks every node for it.
        return {}

    async def _hello(self, from_node: str, revoked: Any = None, **kwargs: Any) -> Any:
        if from_node == self.nodename:
            return None  # mingle asking itself: Celery answers nothing
        return {
            "revoked": list(await _resolve(self._sources["revoked"])),
            "clock": self.clock.forward(),
        }

    async def _heartbeat(self) -> Any:
        # Celery 5.7 answers None when it has no event dispatcher; we send no events.
        return None

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
