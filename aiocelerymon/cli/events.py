"""``aiocelerymon events``: the live monitor, ``celery events --dump``, or a camera."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable

from aiocelerymon.cli._common import (
    EX_OK,
    Context,
    Invocation,
    UsageError,
    Verb,
    _env,
    _execute,
    _Parser,
    _transport_option,
)
from aiocelerymon.cli._monitor import _check_tui, _run_monitor
from aiocelerymon.cli._output import Output
from aiocelerymon.client import Client
from aiocelerymon.events import Camera, Dumper, State, snapshot


def _events_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} events",
        usage=f"{prog} events [OPTIONS]",
        help_command=f"{prog} events",
        description=(
            "The live monitor (Celery's curses monitor, with textual); or print the event "
            "stream as `celery events --dump` does; or run a camera."
        ),
    )
    group = parser.add_argument_group("event options")
    group.add_argument("-d", "--dump", action="store_true", help="Print every event.")
    group.add_argument(
        "-j", "--json", action="store_true", help="With --dump: one JSON object per line."
    )
    group.add_argument("-c", "--camera", metavar="CLASS", help="Camera class (module.Class).")
    group.add_argument(
        "-F", "--frequency", "--freq", metavar="SECONDS", type=float, default=1.0,
        help="Camera shutter frequency (default 1.0).",
    )  # fmt: skip
    group.add_argument("-r", "--maxrate", metavar="RATE", help="Camera rate limit, e.g. 10/s.")
    group.add_argument("--limit", type=int, metavar="N", help="Stop after N events.")
    group.add_argument("--duration", type=float, metavar="SECONDS", help="Stop after SECONDS.")
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    return parser


def _events_invocation(ns: argparse.Namespace, sns: argparse.Namespace) -> Invocation:
    return Invocation(
        subcommand="events",
        app=ns.app or _env("APP", "CELERY_APP"),
        broker=ns.broker or _env("BROKER_URL", "CELERY_BROKER"),
        control_exchange=ns.control_exchange,
        transport_options=dict(_transport_option(item) for item in ns.transport_option),
        json=bool(sns.json),
        dump=bool(sns.dump),
        camera=sns.camera,
        frequency=sns.frequency,
        maxrate=sns.maxrate,
        limit=sns.limit,
        duration=sns.duration,
    )


def load_camera(path: str) -> Callable[..., Camera]:
    """Import a camera class from ``module.Class`` or ``module:Class``: a Camera subclass or
    one of Celery's (``celery.events.snapshot.Polaroid``), which runs through an adapter.

    Raises:
        UsageError: it cannot be imported or is not a camera.
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(f"Cannot load camera {path!r}: {exc}.") from exc
    factory = snapshot.camera_factory(cls)
    if factory is None:
        raise UsageError(
            f"{path!r} is not an aiocelerymon.events.Camera subclass"
            " (nor a celery.events.snapshot.Polaroid one)."
        )
    return factory


async def _run_events(client: Client, invocation: Invocation, out: Output) -> int:
    """``events --dump`` / ``--camera``: receive until interrupted, --limit or --duration."""
    if not (invocation.dump or invocation.camera):
        return await _run_monitor(client, invocation)
    receiver = client.events.receiver()
    camera: Camera | None = None
    if invocation.camera:
        state = State()
        receiver.handlers["*"] = state.event
        cls = load_camera(invocation.camera)
        camera = cls(state, freq=invocation.frequency, maxrate=invocation.maxrate)
        out.echo(snapshot.evcam_banner(invocation.camera, invocation.frequency))
        await camera.start()
    else:
        out.echo("-> evdump: starting capture...")
        if invocation.json:
            receiver.handlers["*"] = lambda ev: out.echo(json.dumps(ev, default=str))
        else:
            receiver.handlers["*"] = Dumper(out.stdout).on_event
    try:
        await receiver.capture(limit=invocation.limit, timeout=invocation.duration)
    finally:
        if camera is not None:
            await camera.aclose()
    return EX_OK


async def _run(ctx: Context) -> int:
    invocation, out = ctx.invocation, ctx.out
    if not (invocation.dump or invocation.camera):
        _check_tui()
    # A monitor waits for its broker, as `celery events` does (kombu's
    # ensure_connection): one warning per outage, then it comes up by itself.
    return await _execute(
        invocation, ctx.app, lambda client: _run_events(client, invocation, out), retry=True
    )


VERB = Verb(
    name="events",
    summary="Live monitor; or dump the events (--dump), or run a camera.",
    parser=_events_parser,
    invocation=lambda ns, sns, _sub: _events_invocation(ns, sns),
    run=_run,
)
