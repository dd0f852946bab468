"""``aiocelerymon demo``: simulated workers on a private in-memory broker, no broker needed."""

from __future__ import annotations

import asyncio
import json
import uuid

from aiocelerymon.cli._common import (
    EX_OK,
    Context,
    Invocation,
    Verb,
    _broker_chore_invocation,
    _Parser,
)
from aiocelerymon.cli._monitor import _check_tui, _run_monitor
from aiocelerymon.cli._output import Output, _isatty
from aiocelerymon.client import Client
from aiocelerymon.events import Dumper

#: ``demo`` without a terminal ends by itself after this many seconds.
DEMO_DURATION = 5.0


def _demo_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} demo",
        usage=f"{prog} demo [OPTIONS]",
        help_command=f"{prog} demo",
        description=(
            "Simulated async workers on the embedded in-memory broker: the live monitor on a "
            "terminal, otherwise (or with --dump) their events in Celery's dump format."
        ),
    )
    group = parser.add_argument_group("demo options")
    group.add_argument("-d", "--dump", action="store_true", help="Print the events instead.")
    group.add_argument("-j", "--json", action="store_true", help="With --dump: JSON lines.")
    group.add_argument("--limit", type=int, metavar="N", help="Stop after N events.")
    group.add_argument(
        "--duration", type=float, metavar="SECONDS",
        help=f"Stop after SECONDS (default without a terminal: {DEMO_DURATION:g}).",
    )  # fmt: skip
    group.add_argument(
        "--rate", type=float, default=4.0, metavar="N", help="Tasks per second (default 4)."
    )
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    return parser


async def _run_demo(invocation: Invocation, out: Output) -> int:
    """Simulated workers on a private in-memory broker; the monitor on a terminal, else dump."""
    from aiocelerymon.demo import DemoCluster

    monitor = not invocation.dump and _isatty(out.stdout)
    if monitor:
        _check_tui()
    duration = invocation.duration
    if duration is None and not monitor and invocation.limit is None:
        duration = DEMO_DURATION  # nobody to press q: end by itself
    run = Invocation(
        subcommand="events", limit=invocation.limit, duration=duration,
        dump=not monitor, json=invocation.json,
    )  # fmt: skip
    async with Client(f"memory://demo-{uuid.uuid4().hex}") as client:
        cluster = DemoCluster(client, rate=invocation.rate)
        try:
            if monitor:
                return await _run_monitor(client, run, on_ready=cluster.start)
            receiver = client.events.receiver()
            if invocation.json:
                receiver.handlers["*"] = lambda ev: out.echo(json.dumps(ev, default=str))
            else:
                receiver.handlers["*"] = Dumper(out.stdout).on_event
            out.echo("-> evdump: starting capture...")
            capture = asyncio.ensure_future(receiver.capture(limit=run.limit, timeout=duration))
            ready = asyncio.ensure_future(receiver.ready.wait())
            await asyncio.wait({capture, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not capture.done():
                await cluster.start()
            await capture
            return EX_OK
        finally:
            await cluster.aclose()


async def _run(ctx: Context) -> int:
    return await _run_demo(ctx.invocation, ctx.out)


VERB = Verb(
    name="demo",
    summary="The live monitor on simulated workers, no broker needed.",
    parser=_demo_parser,
    invocation=lambda ns, sns, _sub: _broker_chore_invocation(ns, sns),
    run=_run,
)
