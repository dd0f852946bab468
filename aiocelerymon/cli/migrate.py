"""``aiocelerymon migrate SOURCE DEST``: ``celery migrate``, moving task messages between brokers.

Same arguments and options (``-n/--limit``, ``-t/--timeout``, ``-a/--ack-messages``,
``-T/--tasks``, ``-Q/--queues`` with Celery's ``src:dst`` renames, ``-F/--forever``) and the same
``Migrating task N/TOTAL: BODY`` lines (celery/contrib/migrate.py). Any two of RabbitMQ, Redis
and memory. Each message is republished as it came (body bytes, headers, content type and
encoding, delivery mode, priority, correlation id, reply-to and the other properties) to the
destination queue through the default exchange, which routes by queue name on every broker.

Safe to kill at any moment: a message is acknowledged on SOURCE only after DEST confirmed it
(RabbitMQ publisher confirms, Redis' LPUSH reply), and until then it stays held on SOURCE
(RabbitMQ requeues it when the connection dies; on Redis the next run puts it back). So a
message is never lost, at worst moved twice; such possible duplicates are counted. As in
Celery, without ``-a`` nothing is acknowledged, so the messages are copied, not moved, and
messages not matched by ``-T`` stay where they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field
from itertools import cycle, islice
from typing import Any

from aiocelerymon.cli._common import (
    CLOSE_TIMEOUT,
    EX_OK,
    CommandError,
    Context,
    Invocation,
    UsageError,
    Verb,
    _env,
    _Parser,
    _transport_option,
    non_negative_float,
    non_negative_int,
)
from aiocelerymon.cli._output import Output
from aiocelerymon.exceptions import AiocelerymonError, ProtocolError
from aiocelerymon.transports import (
    Exchange,
    ExchangeKind,
    Message,
    Received,
    TransportBase,
    create_transport,
)
from aiocelerymon.wire import codec

#: AMQP's default exchange: routes to the queue named by the routing key (Redis: the list).
DEFAULT_EXCHANGE = Exchange("", ExchangeKind.DIRECT)
#: Celery's task_default_queue.
DEFAULT_QUEUE = "celery"
#: Polling an empty source: quick at first, then at most every half second.
_FIRST_POLL, _MAX_POLL = 0.02, 0.5


def _parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} migrate",
        usage=f"{prog} migrate [OPTIONS] SOURCE DESTINATION",
        help_command=f"{prog} migrate",
        description=(
            "Migrate tasks from one broker to another. A message is acknowledged on SOURCE "
            "only once DESTINATION confirmed it: kill it at any moment and nothing is lost."
        ),
    )
    group = parser.add_argument_group("migration options")
    group.add_argument(
        "-n", "--limit", metavar="N", type=non_negative_int, help="Number of tasks to consume."
    )
    group.add_argument(
        "-t", "--timeout", metavar="SECONDS", type=non_negative_float, default=1.0,
        help="Timeout in seconds waiting for tasks (default 1.0).",
    )  # fmt: skip
    group.add_argument(
        "-a", "--ack-messages", action="store_true", help="Ack messages from source broker."
    )
    group.add_argument("-T", "--tasks", metavar="NAMES", help="List of task names to filter on.")
    group.add_argument(
        "-Q", "--queues", metavar="QUEUES",
        help="List of queues to migrate; SRC:DST moves SRC's messages to queue DST.",
    )  # fmt: skip
    group.add_argument(
        "-F", "--forever", action="store_true", help="Continually migrate tasks until killed."
    )
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    parser.add_argument("source", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("destination", nargs="?", help=argparse.SUPPRESS)
    return parser


@dataclass
class _Options:
    source: str
    destination: str
    limit: int | None
    timeout: float
    ack: bool
    tasks: frozenset[str]
    queues: dict[str, str] | None
    forever: bool
    transport_options: dict[str, Any] = field(default_factory=dict)


def prepare_queues(value: str | None) -> dict[str, str] | None:
    """Celery's ``prepare_queues``: ``a,b:c`` -> ``{"a": "a", "b": "c"}``."""
    if value is None:
        return None
    queues: dict[str, str] = {}
    for item in value.split(","):
        if not item:
            continue
        source, dest = islice(cycle(item.split(":")), 2)
        if not source or not dest:
            raise UsageError(f"-Q/--queues: bad queue {item!r} (expected NAME or SRC:DST).")
        queues[source] = dest
    return queues or None


def _invocation(ns: Any, sns: Any, sub: _Parser) -> Invocation:
    for name, label in (("source", "SOURCE"), ("destination", "DESTINATION")):
        if not getattr(sns, name):
            raise UsageError(f"Missing argument '{label}'.", sub.usage, sub.help_command)
    options = _Options(
        source=sns.source,
        destination=sns.destination,
        limit=sns.limit or None,  # Celery: 0 means no limit
        timeout=sns.timeout,
        ack=bool(sns.ack_messages),
        tasks=frozenset(t for t in (sns.tasks or "").split(",") if t),
        queues=prepare_queues(sns.queues),
        forever=bool(sns.forever),
        transport_options=dict(_transport_option(item) for item in ns.transport_option),
    )
    invocation = Invocation(
        subcommand="migrate",
        app=ns.app or _env("APP", "CELERY_APP"),
        no_color=bool(ns.no_color),
        quiet=bool(ns.quiet),
        limit=options.limit,
        verb_options=options,
    )
    return invocation


def _task_name(received: Received) -> str | None:
    """Protocol 2 names the task in the ``task`` header; protocol 1 in the body."""
    name = received.delivery.headers.get("task")
    if isinstance(name, str):
        return name
    with contextlib.suppress(ProtocolError):
        body = _decoded(received)
        if isinstance(body, dict) and isinstance(body.get("task"), str):
            return str(body["task"])
    return None


def _decoded(received: Received) -> Any:
    d = received.delivery
    return codec.decode(d.body, d.content_type, d.content_encoding)


def _shown(received: Received) -> str:
    """The body as Celery's ``Migrating task`` line prints it (the decoded body's str())."""
    try:
        return str(_decoded(received))
    except ProtocolError:
        # Never unpickled, only moved: say what it is instead.
        d = received.delivery
        return f"<{len(d.body)} bytes of {d.content_type or 'unknown content'}>"


def _republished(received: Received) -> Message:
    d = received.delivery
    return Message(
        body=d.body,
        content_type=d.content_type,  # type: ignore[arg-type]
        content_encoding=d.content_encoding,  # type: ignore[arg-type]
        headers=dict(d.headers),
        delivery_mode=d.delivery_mode if d.delivery_mode is not None else 2,
        priority=d.priority if d.priority is not None else 0,
        properties=dict(d.properties),
    )


@dataclass
class _Progress:
    total: int = 0
    count: int = 0
    duplicates: int = 0
    malformed: int = 0
    held: list[Received] = field(default_factory=list)

    @property
    def strtotal(self) -> str:
        return str(self.total) if self.total else "?"


async def _migrate(
    source: TransportBase, dest: TransportBase, options: _Options, names: list[str], out: Output
) -> _Progress:
    mapping = options.queues or {name: name for name in names}
    progress = _Progress()
    for name in names:
        depth = await source.queue_depth(name)
        if depth is not None:
            progress.total += depth.messages
        await dest.ensure_queue(mapping.get(name, name))
    loop = asyncio.get_running_loop()
    idle_since = loop.time()
    delay = _FIRST_POLL
    try:
        while options.limit is None or progress.count < options.limit:
            got_any = False
            for name in names:
                if options.limit is not None and progress.count >= options.limit:
                    break
                received = await source.get(name)
                if received is None:
                    continue
                got_any = True
                if received.malformed is not None:
                    progress.malformed += 1
                    progress.held.append(received)  # left where it was
                    continue
                if options.tasks and _task_name(received) not in options.tasks:
                    progress.held.append(received)  # not ours to move: left where it was
                    continue
                try:
                    await dest.publish(_republished(received), DEFAULT_EXCHANGE, mapping[name])
                except BaseException:
                    await _quietly(received.requeue())
                    raise
                progress.count += 1
                if received.delivery.redelivered:
                    progress.duplicates += 1
                out.echo(f"Migrating task {progress.count}/{progress.strtotal}: {_shown(received)}")
                if options.ack:
                    await received.ack()
                else:
                    progress.held.append(received)  # Celery without -a: copied, not moved
            if got_any:
                idle_since, delay = loop.time(), _FIRST_POLL
                continue
            waited = loop.time() - idle_since
            if not options.forever and waited >= options.timeout:
                break
            pause = delay if options.forever else min(delay, options.timeout - waited)
            await asyncio.sleep(pause)
            delay = min(delay * 2, _MAX_POLL)
    finally:
        # Everything held but not moved goes back to SOURCE (also on errors and Ctrl-C).
        for received in reversed(progress.held):
            await _quietly(received.requeue())
    return progress


async def _quietly(step: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await step


def _queue_names(ctx: Context, options: _Options) -> list[str]:
    if options.queues:
        return list(options.queues)
    if ctx.app is not None:
        return [str(q) for q in ctx.app.amqp.queues]
    return [DEFAULT_QUEUE]


async def _run(ctx: Context) -> int:
    options: _Options = ctx.invocation.verb_options
    out = ctx.out
    names = _queue_names(ctx, options)
    transports: list[TransportBase] = []
    try:
        source = create_transport(options.source, transport_options=options.transport_options)
        transports.append(source)
        # Acknowledge only what DEST confirmed: RabbitMQ publisher confirms (kombu's
        # confirm_publish); a Redis LPUSH is confirmed by its reply.
        dest = create_transport(
            options.destination,
            transport_options={**options.transport_options, "confirm_publish": True},
        )
        transports.append(dest)
        for transport in transports:
            async with asyncio.timeout(transport.connect_timeout):
                await transport.connect()
        progress = await _migrate(source, dest, options, names, out)
    except TimeoutError as exc:
        raise CommandError(f"Could not connect to the brokers: {exc or 'timed out'}.") from exc
    except AiocelerymonError as exc:
        raise CommandError(f"Migration stopped: {exc}") from exc
    finally:
        for transport in transports:
            await _quietly(transport.aclose())
    if progress.duplicates or progress.malformed:
        notes = []
        if progress.duplicates:
            notes.append(
                f"{progress.duplicates} of them redelivered by SOURCE (taken before by a "
                "consumer that did not acknowledge them, e.g. an interrupted migrate or one "
                "without -a: they may be on DESTINATION twice)"
            )
        if progress.malformed:
            notes.append(f"{progress.malformed} malformed message(s) left on SOURCE")
        out.error(f"Migrated {progress.count}; " + "; ".join(notes) + ".")
    return EX_OK


VERB = Verb(
    name="migrate",
    summary="Move task messages between brokers (RabbitMQ, Redis), losing none.",
    parser=_parser,
    invocation=_invocation,
    run=_run,
)
