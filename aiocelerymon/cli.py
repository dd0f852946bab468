"""``aiocelerymon inspect|control|status``: Celery's remote-control commands, output for output.

A drop-in for ``celery inspect``, ``celery control`` and ``celery status`` (Celery 5.5-5.7): the
same options, arguments, text and JSON output, and exit codes, so scripts that parse Celery's
output keep working. Differences are improvements: with ``-d`` it returns as soon as every
named node answered, an unreachable broker is reported within ``broker_connection_timeout``
(Celery retries for longer), and a malformed argument is a usage error instead of a traceback.

Usage::

    aiocelerymon [-A APP] [-b URL] [-C] [-q] [--control-exchange NAME]
                 [--transport-option KEY=VALUE ...] COMMAND ...

    aiocelerymon status  [-t SECONDS] [-d NODE[,NODE...]] [-j]
    aiocelerymon inspect [-t SECONDS] [-d NODE[,NODE...]] [-j] [--list] NAME [ARG ...]
    aiocelerymon control [-t SECONDS] [-d NODE[,NODE...]] [-j] [--list] NAME [ARG ...]
    aiocelerymon events  [--dump [-j] | --camera CLASS] [--limit N] [--duration SECONDS]
    aiocelerymon queues  [-Q a,b] [-X c] [-j] [--watch [SECONDS]] [--count N]
    aiocelerymon purge   [-Q a,b] [-X c] [-f]
    aiocelerymon demo    [--dump [-j]] [--limit N] [--duration SECONDS] [--rate N]

``events`` without ``--dump``/``--camera`` opens the live monitor (the ``tui`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import textwrap
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pprint import pformat
from typing import IO, Any, NoReturn
from urllib.parse import quote

from aiocelerymon._url import parse_url
from aiocelerymon._version import __version__
from aiocelerymon.client import Client
from aiocelerymon.control.commands import (
    COMMANDS,
    ArgumentError,
    Command,
    CommandKind,
    command_from_meta,
    commands_of_kind,
    parse_cli_arguments,
)
from aiocelerymon.events import Camera, Dumper, State
from aiocelerymon.exceptions import (
    AiocelerymonError,
    ConnectError,
    ConnectionLostError,
    TransportTimeoutError,
)
from aiocelerymon.transports import QueueDepth

__all__ = ["EX_OK", "EX_UNAVAILABLE", "EX_USAGE", "main", "run"]

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
#: BSD ``EX_UNAVAILABLE``: what Celery exits with when no node answered or the broker is down.
EX_UNAVAILABLE = 69

#: Celery's broker when neither ``-b``, ``CELERY_BROKER_URL`` nor the app name one.
DEFAULT_BROKER_URL = "amqp://guest@localhost//"
DEFAULT_TIMEOUT = 1.0
#: Upper bound for closing the connection once the answer is printed.
CLOSE_TIMEOUT = 5.0
#: ``demo`` without a terminal ends by itself after this many seconds.
DEMO_DURATION = 5.0

SUBCOMMANDS = ("control", "demo", "events", "inspect", "purge", "queues", "status")

# click's colour codes (``click.style``) and the regex click.echo strips them with.
_COLOURS = {"red": 31, "green": 32, "cyan": 36, "white": 37}
_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")
# click's reading of a boolean environment variable ('' counts as unset).
_ENV_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_ENV_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


# ------------------------------------------------------------------------------------------
# Errors


class UsageError(Exception):
    """Bad command line: printed with a usage hint, exit status 2."""

    def __init__(self, message: str, usage: str | None = None, help_command: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.help_command = help_command


class CommandError(Exception):
    """A failure reported as ``Error: <message>`` on stderr."""

    def __init__(self, message: str, exit_code: int = EX_UNAVAILABLE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class _Exit(Exception):  # noqa: N818 - control flow, like SystemExit
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _ExitWith(_Exit):
    """Print ``text`` on stdout, then exit with ``code``."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(code)
        self.text = text


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting."""

    def __init__(self, *, prog: str, usage: str, help_command: str, **kwargs: Any) -> None:
        super().__init__(prog=prog, usage=usage, add_help=False, allow_abbrev=False, **kwargs)
        self.help_command = help_command

    def error(self, message: str) -> NoReturn:
        raise UsageError(_sentence(message), self.usage, self.help_command)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip(), self.usage, self.help_command)
        raise _Exit(status)


def _sentence(message: str) -> str:
    message = message.strip()
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


# ------------------------------------------------------------------------------------------
# Command line


@dataclass
class Invocation:
    """A parsed command line."""

    subcommand: str
    app: str | None = None
    broker: str | None = None
    no_color: bool = False
    quiet: bool = False
    control_exchange: str | None = None
    transport_options: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    words: list[str] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT
    destination: list[str] | None = None
    json: bool = False
    list: bool = False
    dump: bool = False
    camera: str | None = None
    frequency: float = 1.0
    maxrate: str | None = None
    limit: int | None = None
    duration: float | None = None
    #: queues/purge: -Q, -X, -f, --watch, --count; demo: --rate.
    # Tuples: `list` is a field name in this class body.
    queues: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    force: bool = False
    watch: float | None = None
    count: int | None = None
    rate: float = 4.0


def _top_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [OPTIONS] COMMAND [ARGS]...",
        help_command=prog,
        description=(
            "Inspect and control Celery workers over their remote-control mailbox, "
            "as `celery inspect|control|status` do."
        ),
        epilog=(
            "commands:\n"
            "  status    Show which workers answer a ping.\n"
            "  inspect   Query the workers (NAME: see `inspect --list`).\n"
            "  control   Change the workers' behaviour (NAME: see `control --list`).\n"
            "  events    Live monitor; or dump the events (--dump), or run a camera.\n"
            "  queues    Messages waiting and consumers per task queue.\n"
            "  purge     Delete the waiting messages of task queues.\n"
            "  demo      The live monitor on simulated workers, no broker needed.\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("global options")
    group.add_argument(
        "-A", "--app", metavar="APP", help="Celery app to configure from: module, module:attr."
    )
    group.add_argument(
        "-b", "--broker", metavar="URL", help="Broker URL (overrides the app's broker_url)."
    )
    group.add_argument(
        "--control-exchange", metavar="NAME", help="Remote-control namespace (default: celery)."
    )
    group.add_argument(
        "--transport-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Broker transport option; VALUE is read as JSON when it parses. Repeatable.",
    )
    group.add_argument("--result-backend", metavar="URL", help="Accepted for compatibility.")
    group.add_argument("--loader", metavar="NAME", help="Celery loader used to import the app.")
    group.add_argument(
        "--config", metavar="MODULE", help="Configuration module for the app (via env)."
    )
    group.add_argument("--workdir", metavar="DIR", help="Change to DIR before anything else.")
    group.add_argument(
        "-C", "--no-color", action="store_true", default=None, help="Never print colours."
    )
    group.add_argument("-q", "--quiet", action="store_true", default=None, help="Shorter output.")
    group.add_argument(
        "--skip-checks", action="store_true", help="Skip Django checks while importing the app."
    )
    group.add_argument("--version", action="store_true", help="Print the version and exit.")
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    parser.add_argument("subcommand", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


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


def _queue_options(parser: _Parser, title: str, verb: str) -> argparse._ArgumentGroup:
    group = parser.add_argument_group(title)
    group.add_argument(
        "-Q", "--queues", metavar="QUEUES", action="append",
        help=f"Comma-separated queue names to {verb} (default: the queues the workers consume).",
    )  # fmt: skip
    group.add_argument(
        "-X", "--exclude-queues", metavar="QUEUES", action="append", default=[],
        help=f"Comma-separated queue names not to {verb}.",
    )  # fmt: skip
    group.add_argument(
        "-t", "--timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
        help=f"How long workers get to answer active_queues (default {DEFAULT_TIMEOUT}).",
    )  # fmt: skip
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    return group


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


def _purge_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} purge",
        usage=f"{prog} purge [OPTIONS]",
        help_command=f"{prog} purge",
        description=(
            "Erase all messages from the known task queues. There is no undo for this "
            "operation. Remote-control and event queues are never touched."
        ),
    )
    group = _queue_options(parser, "purging options", "purge")
    group.add_argument("-f", "--force", action="store_true", help="Don't prompt for verification.")
    return parser


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


def _sub_parser(prog: str, subcommand: str) -> _Parser:
    if subcommand == "events":
        return _events_parser(prog)
    if subcommand == "queues":
        return _queues_parser(prog)
    if subcommand == "purge":
        return _purge_parser(prog)
    if subcommand == "demo":
        return _demo_parser(prog)
    takes_command = subcommand != "status"
    usage = f"{prog} {subcommand} [OPTIONS]" + (" COMMAND" if takes_command else "")
    descriptions = {
        "status": "Ping the workers and list those that answer.",
        "inspect": "Send the inspect command COMMAND to the workers and print their answers.",
        "control": "Send the control command COMMAND to the workers and print their answers.",
    }
    parser = _Parser(
        prog=f"{prog} {subcommand}",
        usage=usage,
        help_command=f"{prog} {subcommand}",
        description=descriptions[subcommand],
    )
    group = parser.add_argument_group("remote control options")
    group.add_argument(
        "-t",
        "--timeout",
        metavar="SECONDS",
        help=f"How long to wait for answers (default {DEFAULT_TIMEOUT}).",
    )
    group.add_argument(
        "-d",
        "--destination",
        metavar="NODES",
        help="Comma-separated node names to address; the rest ignore the request.",
    )
    group.add_argument(
        "-j", "--json", action="store_true", default=None, help="Print the answers as JSON."
    )
    if takes_command:
        group.add_argument(
            "--list", action="store_true", help=f"List the {subcommand} commands and exit."
        )
    group.add_argument("-h", "--help", action="store_true", help="Show this message and exit.")
    if takes_command:
        parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
        parser.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    return parser


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _env_flag(option: str, *names: str) -> bool:
    value = _env(*names)
    if value is None:
        return False
    folded = value.strip().lower()
    if folded in _ENV_TRUE:
        return True
    if folded in _ENV_FALSE or not folded:
        return False
    raise UsageError(f"Invalid value for {option}: {value!r} is not a boolean.")


def _transport_option(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UsageError(f"--transport-option expects KEY=VALUE, got {item!r}.")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _split_destination(value: str | None) -> list[str] | None:
    # Celery splits on commas and keeps empty names as they are.
    return None if value is None else value.split(",")


def parse_args(argv: Sequence[str], prog: str = "aiocelerymon") -> tuple[Invocation, _Parser]:
    """Parse a command line (environment variables included, as Celery reads them).

    Raises:
        UsageError: a bad command line.
        _Exit: ``--help``/``--version`` were handled.
    """
    top = _top_parser(prog)
    ns = top.parse_args(list(argv))
    if ns.version:
        raise _ExitWith(f"aiocelerymon {__version__}", EX_OK)
    if ns.help or ns.subcommand is None:
        raise _ExitWith(top.format_help().rstrip("\n"), EX_OK)
    if ns.subcommand not in SUBCOMMANDS:
        raise UsageError(
            f"No such command {ns.subcommand!r}. Available: {', '.join(SUBCOMMANDS)}.",
            top.usage,
            prog,
        )
    if ns.workdir:
        try:
            os.chdir(ns.workdir)
        except OSError as exc:
            raise UsageError(f"Cannot change to --workdir {ns.workdir!r}: {exc}.") from exc
    # Celery passes these on to the app through its environment variables.
    for value, variable in (
        (ns.loader or _env("LOADER", "CELERY_LOADER"), "CELERY_LOADER"),
        (ns.result_backend or _env("RESULT_BACKEND"), "CELERY_RESULT_BACKEND"),
        (ns.config or _env("CONFIG_MODULE", "CELERY_CONFIG"), "CELERY_CONFIG_MODULE"),
    ):
        if value:
            os.environ[variable] = value
    if ns.skip_checks or _env("SKIP_CHECKS", "CELERY_SKIP_CHECKS"):
        os.environ["CELERY_SKIP_CHECKS"] = "true"

    sub = _sub_parser(prog, ns.subcommand)
    sns = sub.parse_intermixed_args(ns.rest)
    if sns.help:
        raise _ExitWith(sub.format_help().rstrip("\n"), EX_OK)
    if ns.subcommand == "events":
        return _events_invocation(ns, sns), sub
    if ns.subcommand in ("queues", "purge", "demo"):
        return _broker_chore_invocation(ns, sns), sub
    prefix = f"CELERY_{ns.subcommand.upper()}_"
    raw_timeout = sns.timeout if sns.timeout is not None else _env(prefix + "TIMEOUT")
    try:
        timeout = DEFAULT_TIMEOUT if raw_timeout is None else float(raw_timeout)
    except ValueError:
        raise UsageError(
            f"Invalid value for '-t' / '--timeout': {raw_timeout!r} is not a valid float.",
            sub.usage,
            sub.help_command,
        ) from None
    invocation = Invocation(
        subcommand=ns.subcommand,
        app=ns.app or _env("APP", "CELERY_APP"),
        broker=ns.broker or _env("BROKER_URL", "CELERY_BROKER"),
        no_color=bool(ns.no_color)
        or _env_flag("'-C' / '--no-color'", "NO_COLOR", "CELERY_NO_COLOR"),
        quiet=bool(ns.quiet) or _env_flag("'-q' / '--quiet'", "CELERY_QUIET"),
        control_exchange=ns.control_exchange,
        transport_options=dict(_transport_option(item) for item in ns.transport_option),
        command=getattr(sns, "command", None),
        words=list(getattr(sns, "words", None) or ()),
        timeout=timeout,
        destination=_split_destination(
            sns.destination if sns.destination is not None else _env(prefix + "DESTINATION")
        ),
        json=bool(sns.json) or _env_flag("'-j' / '--json'", prefix + "JSON"),
        list=bool(getattr(sns, "list", False)),
    )
    return invocation, sub


def _split_queues(values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(name for value in values for name in value.split(",") if name)


def _broker_chore_invocation(ns: argparse.Namespace, sns: argparse.Namespace) -> Invocation:
    return Invocation(
        subcommand=ns.subcommand,
        app=ns.app or _env("APP", "CELERY_APP"),
        broker=ns.broker or _env("BROKER_URL", "CELERY_BROKER"),
        no_color=bool(ns.no_color),
        quiet=bool(ns.quiet),
        control_exchange=ns.control_exchange,
        transport_options=dict(_transport_option(item) for item in ns.transport_option),
        timeout=getattr(sns, "timeout", DEFAULT_TIMEOUT),
        json=bool(getattr(sns, "json", False)),
        dump=bool(getattr(sns, "dump", False)),
        limit=getattr(sns, "limit", None),
        duration=getattr(sns, "duration", None),
        queues=_split_queues(getattr(sns, "queues", None)),
        exclude=_split_queues(getattr(sns, "exclude_queues", None)) or (),
        force=bool(getattr(sns, "force", False)),
        watch=getattr(sns, "watch", None),
        count=getattr(sns, "count", None),
        rate=getattr(sns, "rate", 4.0),
    )


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


def load_camera(path: str) -> type[Camera]:
    """Import a camera class from ``module.Class`` or ``module:Class``.

    Raises:
        UsageError: it cannot be imported or is not a Camera.
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(f"Cannot load camera {path!r}: {exc}.") from exc
    if not (isinstance(cls, type) and issubclass(cls, Camera)):
        raise UsageError(f"{path!r} is not an aiocelerymon.events.Camera subclass.")
    return cls


#: Celery exits 2 when curses is missing (a click UsageError); so do we without textual.
TUI_MISSING = "The live monitor needs textual: pip install 'aiocelerymon[tui]'."


def _check_tui() -> None:
    if importlib.util.find_spec("textual") is None:
        raise UsageError(TUI_MISSING)


async def _run_monitor(
    client: Client,
    invocation: Invocation,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """The live monitor until ``q``, --limit or --duration."""
    try:
        from aiocelerymon.tui import MonitorApp
    except ImportError as exc:  # textual half-installed
        raise UsageError(TUI_MISSING) from exc
    app = MonitorApp(
        client, limit=invocation.limit, duration=invocation.duration, on_ready=on_ready
    )
    with app.logs_as_notifications():
        code = await app.run_async()
    return EX_OK if code is None else code


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


# ------------------------------------------------------------------------------------------
# queues, purge


#: kombu's Redis bookkeeping of delivered, unacknowledged messages (transport options
#: ``unacked_key``/``unacked_index_key``/``unacked_mutex_key``): never a task queue.
_UNACKED_OPTIONS = {
    "unacked_key": "unacked",
    "unacked_index_key": "unacked_index",
    "unacked_mutex_key": "unacked_mutex",
}


def reserved_queue(name: str, client: Client) -> str | None:
    """Why ``name`` must never be purged (a pidbox, event or unacked queue), or None."""
    control = client.control_settings.control_exchange
    # Celery names them <node>.<exchange>.pidbox and <oid>.reply.<exchange>.pidbox.
    if name.endswith((f".{control}.pidbox", ".pidbox")):
        return "it is a remote-control (pidbox) queue"
    if name.startswith(f"{client.event_settings.event_queue_prefix}."):
        return "it is an event queue"
    options = client.transport.transport_options
    if name in {str(options.get(k) or v) for k, v in _UNACKED_OPTIONS.items()}:
        return "it holds kombu's unacknowledged messages, not waiting ones"
    return None


async def task_queues(client: Client, invocation: Invocation, app: Any = None) -> list[str]:
    """-Q, else the app's task queues (Celery's default) and those the workers consume; -X
    removed. Order: as named, then as discovered."""
    names: list[str] = []
    if invocation.queues is not None:
        names = list(invocation.queues)
    else:
        if app is not None:
            names.extend(str(q) for q in app.amqp.queues)
        inspect = client.control.inspect(timeout=invocation.timeout)
        replies: Mapping[str, Any] = await inspect.active_queues() or {}
        for _node, queues in sorted(replies.items()):
            for queue in queues if isinstance(queues, list) else ():
                if isinstance(queue, dict) and isinstance(queue.get("name"), str):
                    names.append(queue["name"])
    excluded = set(invocation.exclude)
    unique = [n for n in dict.fromkeys(names) if n not in excluded]
    if not unique:
        how = "named with -Q" if invocation.queues is not None else (
            f"named with -Q, and no worker answered active_queues within {invocation.timeout:g}s"
        )  # fmt: skip
        raise CommandError(f"No task queues to work on: none {how}.")
    return unique


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


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


async def _confirm(prompt: str, out: Output, stdin: IO[str]) -> bool:
    """click.confirm's ``[y/N]``: only y/yes agree; end of input does not."""
    out.stdout.write(f"{prompt} [y/N]: ")
    out.stdout.flush()
    answer = await asyncio.to_thread(stdin.readline)
    if not _isatty(stdin):
        out.echo()  # a terminal echoes the typed newline; piped input does not
    return answer.strip().lower() in ("y", "yes")


async def _run_purge(
    client: Client, invocation: Invocation, app: Any, out: Output, stdin: IO[str]
) -> int:
    """``purge``: Celery's prompt and summary, plus a line per queue."""
    names = await task_queues(client, invocation, app)
    for name in names:
        why = reserved_queue(name, client)
        if why:
            raise UsageError(f"Refusing to purge {name!r}: {why}.")
    qnum = len(names)
    queues_word = _plural(qnum, "queue")
    if not invocation.force:
        warning = out.style("WARNING", fg="red")
        prompt = (
            f"{warning}: This will remove all tasks from {queues_word}: "
            f"{', '.join(sorted(names))}.\n"
            "         There is no undo for this operation!\n\n"
            "(to skip this prompt use the -f option)\n"
            "Are you sure you want to delete all tasks?"
        )
        if not await _confirm(_ANSI.sub("", prompt) if not _isatty(out.stdout) else prompt,
                              out, stdin):  # fmt: skip
            out.error("Aborted!")
            return EX_FAILURE
    total = 0
    for name in names:
        count = await client.transport.purge_queue(name)
        if count is None:
            out.echo(f"{name}: no such queue")
            continue
        total += count
        out.echo(f"{name}: {count} {_plural(count, 'message')} purged")
    if total:
        out.echo(
            f"Purged {total} {_plural(total, 'message')} from {qnum} known task {queues_word}."
        )
    else:
        out.echo(f"No messages purged from {qnum} {queues_word}.")
    return EX_OK


# ------------------------------------------------------------------------------------------
# demo


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


# ------------------------------------------------------------------------------------------
# The Celery app (-A)


def load_app(spec: str) -> Any:
    """Import a Celery app the way ``celery -A`` does (``module``, ``module:attr``, ...).

    Raises:
        UsageError: Celery is missing, or the module or app cannot be found or imported.
    """
    try:
        utils = importlib.import_module("celery.app.utils")
    except ImportError as exc:
        raise UsageError(f"-A/--app needs Celery installed: {exc}.") from exc
    try:
        return utils.find_app(spec)
    except ModuleNotFoundError as exc:
        if exc.name != spec:
            raise UsageError(
                f"Cannot load the Celery app {spec!r}; importing it failed:\n"
                f"{traceback.format_exc()}"
            ) from exc
        raise UsageError(f"Cannot load the Celery app {spec!r}: no module {exc.name!r}.") from exc
    except AttributeError as exc:
        raise UsageError(f"Cannot load the Celery app {spec!r}: {exc}.") from exc
    except Exception as exc:
        raise UsageError(
            f"Cannot load the Celery app {spec!r}; importing it failed:\n{traceback.format_exc()}"
        ) from exc


def catalogue_for(app: Any) -> dict[str, Command]:
    """Built-in commands plus those the app registered in Celery's worker registry."""
    table = dict(COMMANDS)
    if app is None:
        return table
    try:
        panel = importlib.import_module("celery.worker.control").Panel
    except ImportError:
        return table
    for name, meta in dict(panel.meta).items():
        custom = command_from_meta(name, meta)
        ours = table.get(name)
        if ours is None or (
            (ours.kind, ours.visible, ours.variadic, [a for a, _ in ours.args])
            != (custom.kind, custom.visible, custom.variadic, [a for a, _ in custom.args])
        ):
            table[name] = custom
    return table


def build_client(invocation: Invocation, app: Any = None) -> Client:
    """A :class:`Client` configured like the Celery CLI's app (``-b`` wins over the app)."""
    options = invocation.transport_options
    if app is not None:
        overrides: dict[str, Any] = {}
        if invocation.broker:
            overrides["broker_url"] = invocation.broker
        if invocation.control_exchange:
            overrides["control_exchange"] = invocation.control_exchange
        if options:
            base = app.conf.broker_transport_options or {}
            overrides["broker_transport_options"] = {**base, **options}
        return Client.from_celery_app(app, **overrides)
    kwargs: dict[str, Any] = {"broker_transport_options": options or None}
    if invocation.control_exchange:
        kwargs["control_exchange"] = invocation.control_exchange
    url = invocation.broker or os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL
    return Client(url, **kwargs)


# ------------------------------------------------------------------------------------------
# Output, as Celery's CLI prints it


def _indent(text: str, width: int) -> str:
    return "\n".join(" " * width + line for line in text.split("\n"))


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):
        return False


class Output:
    """Celery's reply formatting: ``->  node: OK`` lines, indented bodies, click's colours.

    Colours are added unless ``no_color`` and stripped again on a stream that is not a
    terminal, exactly as Celery's click-based output does, so piped output has none. As in
    Celery, JSON objects are highlighted with pygments when it is installed, which also ends
    them with a newline (the indented blank line Celery prints after them).
    """

    def __init__(
        self,
        stdout: IO[str],
        stderr: IO[str],
        *,
        no_color: bool = False,
        quiet: bool = False,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.no_color = no_color
        self.quiet = quiet
        self._highlighter: Callable[[str], str] | None = None

    # -- primitives --------------------------------------------------------------------------

    def style(self, text: str, fg: str, bold: bool = False) -> str:
        if self.no_color:
            return text
        codes = f"\033[{_COLOURS[fg]}m" + ("\033[1m" if bold else "")
        return f"{codes}{text}\033[0m"

    def _write(self, stream: IO[str], text: str) -> None:
        if self.no_color or not _isatty(stream):
            text = _ANSI.sub("", text)
        stream.write(text + "\n")
        stream.flush()

    def echo(self, text: str = "") -> None:
        self._write(self.stdout, text)

    def error(self, text: str) -> None:
        self._write(self.stderr, text)

    def highlight(self, text: str) -> str:
        if self._highlighter is None:
            self._highlighter = _pygments_highlighter() or (lambda s: s)
        return self._highlighter(text)

    # -- replies -----------------------------------------------------------------------------

    @property
    def ok(self) -> str:
        return self.style("OK", fg="green", bold=True)

    @property
    def failed(self) -> str:
        return self.style("ERROR", fg="red", bold=True)

    def pretty(self, value: Any) -> tuple[str, str]:
        """``(status, text)`` for one node's reply value."""
        if isinstance(value, list):
            return self.ok, self.pretty_list(value)
        if isinstance(value, dict):
            if "ok" in value:
                return self.ok, _indent(self.pretty(value["ok"])[1], 4)
            if "error" in value:
                return self.failed, _indent(self.pretty(value["error"])[1], 4)
            text = json.dumps(value, sort_keys=True, indent=4)
            if not self.no_color:
                text = self.highlight(text)
            return self.ok, text
        if isinstance(value, str):
            return self.ok, value
        return self.ok, pformat(value)

    def pretty_list(self, items: list[Any]) -> str:
        if not items:
            return "- empty -"
        bullet = self.style("*", fg="white")
        return "\n".join(f"{bullet} {item}" for item in items)

    def reply(self, reply: Mapping[str, Any], show_body: bool) -> None:
        """Print one ``{node: value}`` reply as it arrives."""
        if not reply:
            return
        node = next(iter(reply))
        status, text = self.pretty(reply[node])
        title = f"{self.style(f'{node}: ', fg='cyan', bold=True)}{status}"
        arrow = "" if self.quiet else f"{self.style('->', fg='white', bold=True)} "
        self.echo(f"{arrow} {title}")
        if show_body:
            self.echo(_indent(text, 4))

    def summary(self, count: int) -> None:
        self.echo(f"\n{count} {'node' if count == 1 else 'nodes'} online.")

    def json(self, value: Any) -> None:
        self.echo(json.dumps(value))

    def command_list(self, kind: CommandKind, catalogue: Mapping[str, Command]) -> None:
        """``--list``: the visible commands of one kind with their arguments, click-style."""
        rows = [
            (f"{name} {info.signature}" if info.signature else name, info.help)
            for name, info in commands_of_kind(kind, catalogue).items()
        ]
        width = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)
        first = min(max((len(term) for term, _ in rows), default=0), 30) + 2
        wrap = max(width - first - 2, 10)
        lines = [f"{kind.capitalize()} Commands:"]
        for term, help_text in rows:
            wrapped = textwrap.wrap(help_text, wrap) or [""]
            if len(term) <= first - 2:
                lines.append(f"  {term.ljust(first)}{wrapped[0]}".rstrip())
            else:
                lines.append(f"  {term}")
                lines.append(f"  {' ' * first}{wrapped[0]}".rstrip())
            lines.extend(f"  {' ' * first}{line}" for line in wrapped[1:])
        self.echo("\n".join(lines))


def _pygments_highlighter() -> Callable[[str], str] | None:
    if importlib.util.find_spec("pygments") is None:
        return None
    try:
        pygments = importlib.import_module("pygments")
        formatters = importlib.import_module("pygments.formatters")
        lexers = importlib.import_module("pygments.lexers")
        lexer, formatter = lexers.PythonLexer(), formatters.Terminal256Formatter()
    except Exception:
        return None

    def highlight(text: str) -> str:
        return str(pygments.highlight(text, lexer, formatter))

    return highlight


# ------------------------------------------------------------------------------------------
# Running a command


def _scrub(message: str, broker_url: str | None) -> str:
    """Remove a broker password from a message, whatever form the URL took in it."""
    if not broker_url:
        return message
    with contextlib.suppress(Exception):
        parsed = parse_url(broker_url)
        if parsed.password:
            for secret in {broker_url, parsed.unredacted()}:
                message = message.replace(secret, parsed.redacted())
            for secret in {parsed.password, quote(parsed.password, safe="")}:
                message = message.replace(f":{secret}@", ":**@")
    return message


async def _collect(
    client: Client, invocation: Invocation, arguments: dict[str, Any], out: Output
) -> int:
    kind = invocation.subcommand
    show_body = kind != "status"
    callback = None if invocation.json else (lambda reply: out.reply(reply, show_body))
    command = "ping" if kind == "status" else invocation.command
    assert command is not None
    replies = await client.control.broadcast(
        command,
        arguments,
        destination=invocation.destination,
        reply=True,
        timeout=invocation.timeout,
        callback=callback,
    )
    assert replies is not None
    if kind == "control":
        if not replies:
            raise CommandError("No nodes replied within time constraint")
        if invocation.json:
            out.json(list(replies))
        return EX_OK
    flat = replies.flatten()
    if not flat:
        raise CommandError("No nodes replied within time constraint")
    if invocation.json:
        out.json(dict(flat))
        if kind == "inspect":
            return EX_OK
    # Celery's status prints the summary even with --quiet; inspect does not.
    if kind == "status" or not out.quiet:
        out.summary(len(flat))
    return EX_OK


async def _execute(
    invocation: Invocation,
    app: Any,
    arguments: dict[str, Any],
    out: Output,
    stdin: IO[str] | None = None,
) -> int:
    label = invocation.subcommand
    if invocation.command is not None:
        label += f" {invocation.command}"
    broker_url = invocation.broker
    try:
        client = build_client(invocation, app)
        broker_url = client.transport.url.unredacted()
        try:
            if invocation.subcommand == "events":
                # A monitor waits for its broker, as `celery events` does (kombu's
                # ensure_connection): one warning per outage, then it comes up by itself.
                await client.connect(retry=True)
                return await _run_events(client, invocation, out)
            # Connecting is bounded by broker_connection_timeout (the transport's, Celery's 4 s
            # default), not by -t: -t covers only the wait for replies, as in Celery.
            await client.connect()
            if invocation.subcommand == "queues":
                return await _run_queues(client, invocation, app, out)
            if invocation.subcommand == "purge":
                return await _run_purge(client, invocation, app, out, stdin or sys.stdin)
            return await _collect(client, invocation, arguments, out)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await client.aclose()
    except (CommandError, BrokenPipeError):
        raise
    except (ConnectError, ConnectionLostError, TransportTimeoutError) as exc:
        raise CommandError(
            "Could not connect to the message broker. Check that the broker is running and "
            f"that the broker URL and options are right. Reason: {_scrub(str(exc), broker_url)}"
        ) from exc
    except (AiocelerymonError, ImportError, OSError) as exc:
        raise CommandError(
            f"Unable to run the `{label}` command. Reason: {_scrub(str(exc), broker_url)}"
        ) from exc


def _show_usage_error(out: Output, error: UsageError, prog: str) -> None:
    if error.usage:
        out.error(f"Usage: {error.usage}")
        out.error(f"Try '{error.help_command or prog} --help' for help.\n")
    out.error(f"Error: {error.message}")


async def run(
    argv: Sequence[str],
    *,
    prog: str = "aiocelerymon",
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    stdin: IO[str] | None = None,
) -> int:
    """Run one command line in the running event loop; returns the exit status."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    out = Output(stdout, stderr)
    try:
        invocation, sub = parse_args(argv, prog)
        out.no_color, out.quiet = invocation.no_color, invocation.quiet
        app = load_app(invocation.app) if invocation.app else None
        catalogue = catalogue_for(app)
        arguments: dict[str, Any] = {}
        if invocation.subcommand == "demo":
            return await _run_demo(invocation, out)
        if invocation.subcommand == "events" and not (invocation.dump or invocation.camera):
            _check_tui()
        if invocation.subcommand in ("inspect", "control"):
            kind: CommandKind = "inspect" if invocation.subcommand == "inspect" else "control"
            if invocation.list:
                out.command_list(kind, catalogue)
                return EX_OK
            offered = commands_of_kind(kind, catalogue)
            if invocation.command is None:
                raise UsageError("Missing argument 'COMMAND'.", sub.usage, sub.help_command)
            if invocation.command not in offered:
                raise UsageError(
                    f"Unknown {kind} command {invocation.command!r}. "
                    f"Known {kind} commands: {', '.join(offered)}.",
                    sub.usage,
                    sub.help_command,
                )
            try:
                arguments = parse_cli_arguments(offered[invocation.command], invocation.words)
            except ArgumentError as exc:
                raise UsageError(str(exc), sub.usage, sub.help_command) from exc
        return await _execute(invocation, app, arguments, out, stdin)
    except _ExitWith as done:
        out.echo(done.text)
        return done.code
    except _Exit as done:
        return done.code
    except UsageError as exc:
        _show_usage_error(out, exc, prog)
        return EX_USAGE
    except CommandError as exc:
        out.error(f"Error: {exc.message}")
        return exc.exit_code


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "aiocelerymon"
    return "python -m aiocelerymon" if name in ("__main__.py", "-m", "-c") else name


@contextlib.contextmanager
def _cli_logging(stderr: IO[str]) -> Iterator[None]:
    """Driver chatter (aio-pika, redis, asyncio) must not reach the terminal; our own warnings
    (e.g. two workers sharing a node name) are printed as plain lines, as Celery's are.
    Everything is put back afterwards (``main`` may be called in-process)."""
    root = logging.getLogger()
    ours = logging.getLogger("aiocelerymon")
    silencer = logging.NullHandler()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING)
    added_root = not root.handlers
    if added_root:
        root.addHandler(silencer)
    ours.addHandler(handler)
    propagate, ours.propagate = ours.propagate, False
    try:
        yield
    finally:
        ours.propagate = propagate
        ours.removeHandler(handler)
        if added_root:
            root.removeHandler(silencer)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``aiocelerymon`` / ``python -m aiocelerymon``."""
    prog = _prog() if argv is None else "aiocelerymon"
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with _cli_logging(sys.stderr):
            return asyncio.run(run(args, prog=prog))
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.stderr.write("Aborted!\n")
        return EX_FAILURE
    except BrokenPipeError:
        # `aiocelerymon inspect stats | head`: stop quietly, like a well-behaved filter.
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EX_FAILURE
