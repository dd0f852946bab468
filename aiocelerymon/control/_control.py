"""Broadcast, inspect and control: Celery's ``app.control`` API, async and deadline-bound.

Shapes follow Celery (``celery/app/control.py``): ``broadcast(reply=True)`` returns the list of
``{node: reply}`` bodies in arrival order; ``Inspect`` methods return them flattened into one
dict, or, when nobody answered, :class:`NoReplies`: empty, falsy and equal to None like Celery's
None, but still saying who was missing. What is better than Celery: ``timeout`` is a total
deadline for the replies (kombu's is an idle gap between replies), a call returns as soon as
every addressed or expected node answered, and many calls share one reply queue without ever
seeing each other's replies.

What bounds what: ``timeout`` covers only the wait for replies and starts once the request is
out, as in Celery (kombu ``Mailbox._broadcast`` publishes, then ``_collect`` waits). Connecting,
declaring the reply queue and publishing are bounded by the transport's own deadline
(``broker_connection_timeout``, Celery's 4 s), so a slow link or a client busy with many calls
is never mistaken for a dead broker, and an error there says what the broker did.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiocelerymon.exceptions import ConnectionLostError
from aiocelerymon.transports import TransportState
from aiocelerymon.wire.pidbox import ReplyTo, request_body

if TYPE_CHECKING:
    from aiocelerymon.control._mailbox import Mailbox

__all__ = ["Control", "Inspect", "NoReplies", "NodeReplies", "Replies", "is_error"]

log = logging.getLogger("aiocelerymon.control")

#: Celery's default for every inspect/control call and for the CLI's ``-t``.
DEFAULT_TIMEOUT = 1.0


def is_error(value: Any) -> bool:
    """Whether a node's reply is an error (``{"error": ...}``), as Celery's CLI decides."""
    return isinstance(value, dict) and "error" in value


class Replies(list[dict[str, Any]]):
    """Reply bodies ``[{node: value}, ...]`` in arrival order, plus what Celery does not tell.

    Attributes:
        missing: nodes that did not answer before the deadline although they were addressed
            (``destination``), ``expected``, or known to this client: they answered one of its
            calls in the last :attr:`Mailbox.known_node_ttl <aiocelerymon.control.Mailbox>`
            seconds (and match ``pattern``). A busy cluster shows here, not as an empty result.
        duplicates: node names that answered more than once (two workers with one name).
        complete: False if any node is ``missing``, or if the reply queue reconnected during
            the call (replies may be lost). True means nobody we know of was left out.
    """

    missing: frozenset[str]
    duplicates: frozenset[str]
    complete: bool

    def __init__(self, items: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__(items)
        self.missing = frozenset()
        self.duplicates = frozenset()
        self.complete = True

    @property
    def errors(self) -> dict[str, Any]:
        """``{node: error message}`` for every error reply."""
        return {
            node: value["error"]
            for reply in self
            for node, value in reply.items()
            if is_error(value)
        }

    def flatten(self) -> NodeReplies:
        """Merge into one ``{node: value}`` dict; a later duplicate wins, as in Celery."""
        flat = NodeReplies()
        for reply in self:
            flat.update(reply)
        flat.missing, flat.duplicates, flat.complete = (
            self.missing,
            self.duplicates,
            self.complete,
        )
        return flat


class NodeReplies(dict[str, Any]):
    """``{node: value}`` as Celery's ``Inspect`` returns it, with ``missing``/``duplicates``/
    ``complete`` as in :class:`Replies`."""

    missing: frozenset[str] = frozenset()
    duplicates: frozenset[str] = frozenset()
    complete: bool = True

    @property
    def errors(self) -> dict[str, Any]:
        """``{node: error message}`` for every error reply."""
        return {node: value["error"] for node, value in self.items() if is_error(value)}


class NoReplies(NodeReplies):
    """What an ``Inspect`` method returns when nobody answered, where Celery returns None.

    It behaves like that None where Celery users test for it (``not result``, ``result or {}``,
    ``result == None``) but keeps ``missing``/``duplicates``/``complete``, so "these nodes did
    not answer" survives. Only ``result is None`` cannot hold: test truthiness instead.
    """

    # dict's own __eq__/__ne__ would answer NotImplemented for None, hence both.
    def __eq__(self, other: object) -> bool:
        if other is None:
            return not self
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __repr__(self) -> str:
        if self:
            return f"NoReplies({dict.__repr__(self)})"
        return f"NoReplies(missing={sorted(self.missing)!r}, complete={self.complete})"


def _check_timeout(timeout: float | None) -> float | None:
    """A usable reply timeout: None for no deadline (inf too); negative or NaN is an error."""
    if timeout is None or timeout == math.inf:
        return None
    if not timeout >= 0:  # also catches NaN
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    return float(timeout)


def _matches(node: str, pattern: str, matcher: str) -> bool:
    if matcher == "pcre":
        return re.match(pattern, node) is not None
    return fnmatch.fnmatch(node, pattern)


class Control:
    """Remote control of a Celery cluster (the async ``app.control``)."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    # -- core --------------------------------------------------------------------------------

    async def stream(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        destination: Sequence[str] | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        limit: int | None = None,
        expected: Collection[str] | None = None,
        _result: Replies | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Send ``command`` and yield each ``{node: value}`` reply as it arrives.

        ``timeout`` is the total time to wait for replies, counted from when the request was
        sent (None: no deadline, so give ``limit``, ``destination`` or ``expected``; inf is
        None). The call ends then, after ``limit`` replies (Celery's default is
        ``len(destination)``), or as soon as every node in ``destination`` or ``expected``
        answered. Connecting, declaring the reply queue and publishing come before and are
        bounded by the transport (``broker_connection_timeout``), not by ``timeout``.

        Raises:
            ConnectError: no connection to the broker within its connect timeout.
            ConnectionLostError: the connection broke before the request was sent, or while
                waiting for replies (at once, not at the deadline; the request is never
                re-sent).
            TransportError: the broker refused or did not confirm the request in time.
            ValueError: ``destination`` is not a list of names, or ``timeout`` is negative
                or NaN.
        """
        if destination is not None and isinstance(destination, str):
            raise ValueError("destination must be a list of node names, not a string")
        timeout = _check_timeout(timeout)
        if limit is None and destination:
            limit = len(destination)
        waiting = set(destination or expected or ())
        answered: set[str] = set()
        duplicates: set[str] = set()
        loop = asyncio.get_running_loop()
        ticket = str(uuid.uuid4())
        mailbox = self.mailbox
        inbox = mailbox.register(ticket)
        generation = None
        timed_out = False
        count = 0
        try:
            await self._send(command, arguments, destination, pattern, matcher, timeout, ticket)
            inbox.sent = True
            generation = mailbox.generation
            # From here on only replies count (kombu starts _collect after the publish).
            deadline = None if timeout is None else loop.time() + timeout
            while limit is None or count < limit:
                if waiting and waiting <= answered:
                    break
                if inbox.queue.empty():
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        timed_out = True
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            reply = await inbox.queue.get()
                    except TimeoutError:
                        timed_out = True
                        break
                else:
                    reply = inbox.queue.get_nowait()  # arrived already (e.g. while publishing)
                if inbox.error is not None:
                    raise ConnectionLostError(
                        f"reply queue lost while waiting for {command!r}: {inbox.error}; "
                        "the request was not re-sent"
                    ) from inbox.error
                for node in reply:
                    if node in answered:
                        duplicates.add(node)
                        log.warning(
                            "received multiple replies from node name: %s. Please make sure "
                            "you give each node a unique nodename using the celery worker `-n` "
                            "option.",
                            node,
                        )
                    answered.add(node)
                count += 1
                yield reply
        finally:
            mailbox.unregister(ticket)
            if _result is not None:
                missing = waiting - answered
                if timed_out and not destination:
                    # Everyone was asked: nodes we heard from lately and that should have
                    # answered (by the pattern, if any) but did not are missing too, so a
                    # busy cluster is not mistaken for an empty one.
                    missing |= {
                        node
                        for node in mailbox.known_nodes()
                        if not pattern or _matches(node, pattern, matcher or "glob")
                    } - answered
                _result.missing = frozenset(missing)
                _result.duplicates = frozenset(duplicates)
                # A reconnect of the reply queue during the call, or an outage still going on
                # at its end (no restore yet, so no new generation), may have lost replies.
                _result.complete = (
                    not missing
                    and generation == mailbox.generation
                    and mailbox.transport.state is TransportState.CONNECTED
                )

    async def _send(
        self,
        command: str,
        arguments: Mapping[str, Any] | None,
        destination: Sequence[str] | None,
        pattern: str | None,
        matcher: str | None,
        timeout: float | None,
        ticket: str | None,
    ) -> None:
        """Subscribe (first call only) and publish, bounded by the connect timeout.

        Not under the call's reply deadline: a request queued behind others, or on a slow
        link, is slow, not lost; only a broker that does not answer within its connect
        timeout fails it (ConnectError, ConnectionLostError, TransportTimeoutError).
        """
        mailbox = self.mailbox
        transport = mailbox.transport
        reply_to = None
        if ticket is not None:
            await mailbox.listen()
            reply_to = ReplyTo(exchange=mailbox.reply_exchange, routing_key=mailbox.oid)
        body = request_body(
            command,
            arguments,
            destination=destination,
            pattern=pattern,
            matcher=matcher,
            ticket=ticket,
            reply_to=reply_to,
        )
        # The transports bound their own I/O; this also bounds a publish that waits for a
        # reconnect, so no send can outlive the connect timeout whatever the adapter.
        limit: float | None = getattr(transport, "connect_timeout", None)
        bound = asyncio.timeout(limit)
        try:
            async with bound:
                await mailbox.publish(body, timeout)
        except TimeoutError as exc:
            if not bound.expired():
                raise  # the adapter's own TransportTimeoutError says more
            url = getattr(transport, "url", "the broker")
            raise ConnectionLostError(
                f"could not send {command!r} to {url}: the broker did not take it within "
                f"{limit}s (broker_connection_timeout)"
            ) from exc

    async def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        reply: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        limit: int | None = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        expected: Collection[str] | None = None,
        **extra: Any,
    ) -> Replies | None:
        """Celery's ``Control.broadcast``: a cast unless ``reply=True``.

        Extra keyword arguments are merged into ``arguments``, as Celery does. ``callback`` is
        called with each reply as it arrives (it may be a coroutine function).
        """
        args = {**(arguments or {}), **extra}
        if not reply:
            timeout = _check_timeout(timeout)
            await self._send(command, args, destination, pattern, matcher, timeout, None)
            return None
        result = Replies()
        async for body in self.stream(
            command,
            args,
            destination=destination,
            pattern=pattern,
            matcher=matcher,
            timeout=timeout,
            limit=limit,
            expected=expected,
            _result=result,
        ):
            result.append(body)
            if callback is not None:
                outcome = callback(body)
                if asyncio.iscoroutine(outcome):
                    await outcome
        return result

    def inspect(
        self,
        destination: Sequence[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        expected: Collection[str] | None = None,
    ) -> Inspect:
        """Celery's ``app.control.inspect(...)``."""
        return Inspect(
            self,
            destination=destination,
            timeout=timeout,
            callback=callback,
            limit=limit,
            pattern=pattern,
            matcher=matcher,
            expected=expected,
        )

    # -- control commands (Celery's argument names; casts unless reply=True) -------------------

    async def ping(
        self,
        destination: Sequence[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> Replies:
        """``[{node: {"ok": "pong"}}, ...]``."""
        result = await self.broadcast(
            "ping", reply=True, destination=destination, timeout=timeout, **kwargs
        )
        assert result is not None
        return result

    async def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> Replies | None:
        """Revoke task(s); with ``terminate`` also kill the executing process."""
        args = {"task_id": task_id, "terminate": terminate, "signal": signal}
        return await self.broadcast("revoke", args, destination, **kwargs)

    async def terminate(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> Replies | None:
        """Revoke with ``terminate=True``."""
        return await self.revoke(task_id, destination, terminate=True, signal=signal, **kwargs)

    async def revoke_by_stamped_headers(
        self,
        headers: Mapping[str, Any],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str = "SIGTERM",
        **kwargs: Any,
    ) -> Replies | None:
        """Revoke tasks whose stamped headers match (Celery 5.3+ workers)."""
        args = {"headers": dict(headers), "terminate": terminate, "signal": signal}
        return await self.broadcast("revoke_by_stamped_headers", args, destination, **kwargs)

    async def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        """Set a task's rate limit (``"10/m"``; falsy disables)."""
        args = {"task_name": task_name, "rate_limit": rate_limit}
        return await self.broadcast("rate_limit", args, destination, **kwargs)

    async def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        """Set a task's soft/hard time limits."""
        args = {"task_name": task_name, "hard": hard, "soft": soft}
        return await self.broadcast("time_limit", args, destination, **kwargs)

    async def enable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Ask workers to send task events."""
        return await self.broadcast("enable_events", {}, destination, **kwargs)

    async def disable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Ask workers to stop sending task events."""
        return await self.broadcast("disable_events", {}, destination, **kwargs)

    async def heartbeat(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Ask workers to send a ``worker-heartbeat`` event now."""
        return await self.broadcast("heartbeat", {}, destination, **kwargs)

    async def pool_grow(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Add ``n`` pool processes."""
        return await self.broadcast("pool_grow", {"n": n}, destination, **kwargs)

    async def pool_shrink(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Remove ``n`` pool processes."""
        return await self.broadcast("pool_shrink", {"n": n}, destination, **kwargs)

    async def autoscale(
        self, max: int, min: int, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Change the autoscaler's bounds."""
        return await self.broadcast("autoscale", {"max": max, "min": min}, destination, **kwargs)

    async def pool_restart(
        self,
        modules: Sequence[str] | None = None,
        reload: bool = False,
        reloader: str | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        """Restart the pool's processes (needs ``worker_pool_restarts``)."""
        args = {"modules": modules, "reload": reload, "reloader": reloader}
        return await self.broadcast("pool_restart", args, destination, **kwargs)

    async def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        """Make workers consume from ``queue``."""
        args = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return await self.broadcast("add_consumer", args, destination, **kwargs)

    async def cancel_consumer(
        self, queue: str, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Make workers stop consuming from ``queue``."""
        return await self.broadcast("cancel_consumer", {"queue": queue}, destination, **kwargs)

    async def shutdown(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        """Shut workers down (they never reply)."""
        return await self.broadcast("shutdown", {}, destination, **kwargs)


class Inspect:
    """Celery's ``Inspect``: each method returns ``{node: value}``, or a :class:`NoReplies`
    (falsy and equal to None, as Celery's None, with ``missing``) when nobody answered."""

    def __init__(
        self,
        control: Control,
        *,
        destination: Sequence[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        expected: Collection[str] | None = None,
    ) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher
        self.expected = expected

    async def _request(self, command: str, **arguments: Any) -> NodeReplies:
        replies = await self.control.broadcast(
            command,
            arguments,
            destination=self.destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            callback=self.callback,
            pattern=self.pattern,
            matcher=self.matcher,
            expected=self.expected,
        )
        assert replies is not None
        flat = replies.flatten()
        if self.pattern:
            # Celery filters again locally, with glob when no matcher is given (the request
            # itself only carries the pattern when both are set, so everyone answers).
            matcher = self.matcher or "glob"
            for node in [n for n in flat if not _matches(n, self.pattern, matcher)]:
                del flat[node]
        if flat:
            return flat
        # Celery returns None here; NoReplies is as falsy but keeps who was missing.
        nobody = NoReplies()
        nobody.missing, nobody.duplicates, nobody.complete = (
            flat.missing,
            flat.duplicates,
            flat.complete,
        )
        return nobody

    async def call(self, command: str, **arguments: Any) -> NodeReplies:
        """Any inspect command by name, custom ones included."""
        return await self._request(command, **arguments)

    async def ping(self, destination: Sequence[str] | None = None) -> NodeReplies:
        """``{node: {"ok": "pong"}}``; ``destination`` re-targets this Inspect, as in Celery."""
        if destination:
            self.destination = destination
        return await self._request("ping")

    async def clock(self) -> NodeReplies:
        """``{node: {"clock": n}}``."""
        return await self._request("clock")

    async def report(self) -> NodeReplies:
        """Bug-report information of each worker."""
        return await self._request("report")

    async def stats(self) -> NodeReplies:
        """Worker statistics."""
        return await self._request("stats")

    async def active(self, safe: bool | None = None) -> NodeReplies:
        """Tasks being executed (``safe`` makes args/kwargs reprs; Celery 5.2+)."""
        return await self._request("active", safe=safe)

    async def reserved(self) -> NodeReplies:
        """Tasks received and waiting to run."""
        return await self._request("reserved")

    async def scheduled(self) -> NodeReplies:
        """Tasks with an ETA or countdown."""
        return await self._request("scheduled")

    async def revoked(self) -> NodeReplies:
        """Revoked task ids."""
        return await self._request("revoked")

    async def registered(self, *taskinfoitems: str) -> NodeReplies:
        """Registered task names (with the requested attributes)."""
        return await self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    async def active_queues(self) -> NodeReplies:
        """Queues each worker consumes from."""
        return await self._request("active_queues")

    async def query_task(self, *ids: str | Sequence[str]) -> NodeReplies:
        """``{node: {task_id: [state, info]}}`` for the ids each worker knows.

        Like Celery, one list of ids is accepted as well as the ids themselves.
        """
        flat = list(ids[0]) if len(ids) == 1 and not isinstance(ids[0], str) else list(ids)
        return await self._request("query_task", ids=flat)

    async def conf(self, with_defaults: bool = False) -> NodeReplies:
        """Each worker's configuration (secrets masked by the worker)."""
        return await self._request("conf", with_defaults=with_defaults)

    async def memsample(self) -> NodeReplies:
        """Memory sample (needs psutil on the worker)."""
        return await self._request("memsample")

    async def memdump(self, samples: int = 10) -> NodeReplies:
        """Memory dump of the last ``samples`` samples."""
        return await self._request("memdump", samples=samples)

    async def objgraph(
        self, type: str = "Request", n: int = 200, max_depth: int = 10
    ) -> NodeReplies:
        """Object graph (needs objgraph on the worker)."""
        return await self._request("objgraph", num=n, max_depth=max_depth, type=type)

    async def hello(self, from_node: str, revoked: Sequence[str] | None = None) -> NodeReplies:
        """Mingle's handshake."""
        return await self._request("hello", from_node=from_node, revoked=revoked)
