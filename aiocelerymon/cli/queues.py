"""``aiocelerymon queues``: the messages waiting and the consumers of each task queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiocelerymon.cli._common import (
    EX_OK,
    Context,
    Invocation,
    Verb,
    _broker_chore_invocation,
    _execute,
    _Parser,
)
from aiocelerymon.cli._output import Output, _isatty
from aiocelerymon.cli._task_queues import _queue_options, task_queues
from aiocelerymon.client import Client
from aiocelerymon.transports import QueueDepth


def _queues_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} queues",
        usage=f"{prog} queues [OPTIONS]",
        help_command=f"{prog} queues",
        description="Show the messages waiting and the consumers of each task queue.",
    )
    group = _queue_options(parser, "queue options", "show")
    group.add_argument("-j", "--json", action="store_true", help="Print JSON.")
    group.add_argument(
        "-w", "--watch", metavar="SECONDS", nargs="?", type=float, const=2.0,
        help="Refresh every SECONDS (default 2) until interrupted.",
    )  # fmt: skip
    group.add_argument("--count", type=int, metavar="N", help="With --watch: stop after N.")
    return parser


def _queues_table(depths: Sequence[tuple[str, QueueDepth | None]]) -> str:
    rows = [("QUEUE", "MESSAGES", "CONSUMERS")]
    for name, depth in depths:
        if depth is None:
            rows.append((name, "-", "no such queue"))
        else:
            consumers = "unknown" if depth.consumers is None else str(depth.consumers)
            rows.append((name, str(depth.messages), consumers))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a.ljust(width)}  {b:>8}  {c:>9}".rstrip() for a, b, c in rows)


async def _run_queues(client: Client, invocation: Invocation, app: Any, out: Output) -> int:
    """``queues``: messages and consumers per queue, once or every --watch seconds."""
    names = await task_queues(client, invocation, app)
    shown = 0
    while True:
        depths = [(name, await client.transport.queue_depth(name)) for name in names]
        if invocation.json:
            out.json([
                {"name": name, "exists": d is not None,
                 "messages": d.messages if d else None, "consumers": d.consumers if d else None}
                for name, d in depths
            ])  # fmt: skip
        else:
            if invocation.watch is not None:
                if _isatty(out.stdout):
                    out.stdout.write("\033[H\033[2J")  # clear, as watch(1) does
                stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
                out.echo(f"Every {invocation.watch:g}s: queues on {client.transport.url}  {stamp}")
            out.echo(_queues_table(depths))
        shown += 1
        if invocation.watch is None or (invocation.count and shown >= invocation.count):
            return EX_OK
        await asyncio.sleep(invocation.watch)


async def _run(ctx: Context) -> int:
    invocation, app, out = ctx.invocation, ctx.app, ctx.out
    return await _execute(invocation, app, lambda client: _run_queues(client, invocation, app, out))


VERB = Verb(
    name="queues",
    summary="Messages waiting and consumers per task queue.",
    parser=_queues_parser,
    invocation=lambda ns, sns, _sub: _broker_chore_invocation(ns, sns),
    run=_run,
)
