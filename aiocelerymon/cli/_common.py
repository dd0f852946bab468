"""What every verb shares: exit codes, errors, the parsed command line, the environment,
the app (``-A``), the client, and running a verb against the broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import quote

from aiocelerymon._url import parse_url
from aiocelerymon.cli._output import Output
from aiocelerymon.client import Client
from aiocelerymon.control.commands import COMMANDS, Command, command_from_meta
from aiocelerymon.events.snapshot import parse_rate
from aiocelerymon.exceptions import (
    AiocelerymonError,
    ConnectError,
    ConnectionLostError,
    TransportTimeoutError,
)

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
#: BSD ``EX_UNAVAILABLE``: what Celery exits with when no node answered or the broker is down.
EX_UNAVAILABLE = 69
#: Our reader closed the pipe: what the shell reports for a filter that SIGPIPE ended.
EX_SIGPIPE = 128 + 13

#: Celery's broker when neither ``-b``, ``CELERY_BROKER_URL`` nor the app name one.
DEFAULT_BROKER_URL = "amqp://guest@localhost//"
DEFAULT_TIMEOUT = 1.0
#: Upper bound for closing the connection once the answer is printed.
CLOSE_TIMEOUT = 5.0

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
        # argparse says "argument -t/--timeout: ..."; click (Celery) says "Invalid value for
        # '-t' / '--timeout': ...", which reads as a sentence naming the option.
        found = _ARGPARSE_VALUE_ERROR.match(message)
        if found:
            message = f"Invalid value for {_option_label(found[1])}: {found[2]}"
        raise UsageError(_sentence(message), self.usage, self.help_command)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip(), self.usage, self.help_command)
        raise _Exit(status)


_ARGPARSE_VALUE_ERROR = re.compile(r"argument (-[^:]+): (.*)", re.DOTALL)


def _option_label(names: str) -> str:
    """``-t/--timeout`` -> ``'-t' / '--timeout'``, as click names an option."""
    return " / ".join(f"'{name}'" for name in names.split("/"))


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
    #: inspect/control/status: one JSON line per reply, as it arrives.
    jsonl: bool = False
    #: inspect/control/status: address the nodes whose names match (Celery's pattern/matcher).
    pattern: str | None = None
    matcher: str | None = None
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
    #: A verb's own parsed options, when no shared field fits (migrate).
    verb_options: Any = None
    #: result: the task id, -t/--task, --traceback, --wait.
    task_id: str | None = None
    task: str | None = None
    traceback: bool = False
    wait: float = 0.0


@dataclass(frozen=True)
class Context:
    """What a verb runs with, once the command line is parsed and the app loaded."""

    invocation: Invocation
    #: The verb's own parser, for usage errors.
    parser: _Parser
    app: Any
    catalogue: dict[str, Command]
    out: Output
    stdin: IO[str] | None = None


@dataclass(frozen=True)
class Verb:
    """One ``aiocelerymon NAME ...`` command; :mod:`aiocelerymon.cli` lists them in ``VERBS``."""

    name: str
    #: Its line under ``commands:`` in ``aiocelerymon --help``.
    summary: str
    #: Its own parser, given the program name.
    parser: Callable[[str], _Parser]
    #: Its :class:`Invocation`, from the global options, its own options and its parser.
    invocation: Callable[[argparse.Namespace, argparse.Namespace, _Parser], Invocation]
    #: Runs it; returns the exit status.
    run: Callable[[Context], Awaitable[int]]
    #: Ctrl-C: None prints click's ``Aborted!`` and exits 1 (``celery inspect``); a status
    #: ends quietly with it (``celery events`` exits 0).
    on_interrupt: int | None = None


# ------------------------------------------------------------------------------------------
# Numeric options: checked at parse time, for every verb
#
# A bad number is a usage error (exit 2) naming the option, never a busy loop (`--watch 0`),
# a run that never ends (`-t inf`) or a misleading "broker unreachable" (`-t -1`).

_Number = TypeVar("_Number", int, float)


def numeric(kind: type[_Number], minimum: _Number, *, inclusive: bool) -> Callable[[str], _Number]:
    """An argparse ``type=`` for a finite number above ``minimum`` (or at least it, when
    ``inclusive``): ``type=numeric(float, 0, inclusive=False)``.

    Bad values raise :class:`argparse.ArgumentTypeError`, which our parser reports as
    ``Invalid value for '-t' / '--timeout': '0' is not a number greater than 0.``; values from
    the environment go through :func:`check_number`.
    """
    noun = "an integer" if kind is int else "a number"
    bound = f"{'at least' if inclusive else 'greater than'} {minimum:g}"

    def parse(text: str) -> _Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun} {bound}")
        return value

    parse.__name__ = kind.__name__
    return parse


#: Seconds (timeouts, intervals, durations) and rates: finite and > 0.
positive_float = numeric(float, 0.0, inclusive=False)
#: Counts (``--limit``, ``--count``): at least 1.
positive_int = numeric(int, 1, inclusive=True)
#: Counts where 0 means something (e.g. "none").
non_negative_int = numeric(int, 0, inclusive=True)
#: Waits where 0 means "do not wait" (``result --wait``, ``migrate -t``).
non_negative_float = numeric(float, 0.0, inclusive=True)


def positive_rate(text: str) -> str:
    """An argparse ``type=`` for a Celery rate string (``10``, ``10/s``, ``100/m``, ``1/h``)
    above 0; returned as given."""
    try:
        per_second = parse_rate(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: expected N, N/s, N/m or N/h"
        ) from None
    if not (math.isfinite(per_second) and per_second > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate greater than 0")
    return text


def check_number(
    parse: Callable[[str], _Number], text: str, option: str, parser: _Parser | None = None
) -> _Number:
    """:func:`numeric`'s check for a value that did not come through argparse (an
    environment variable): a :class:`UsageError` naming ``option`` (``-t/--timeout``)."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        message = _sentence(f"Invalid value for {_option_label(option)}: {exc}")
        if parser is None:
            raise UsageError(message) from None
        raise UsageError(message, parser.usage, parser.help_command) from None


# ------------------------------------------------------------------------------------------
# Environment and options


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


# ------------------------------------------------------------------------------------------
# The Celery app (-A) and the client


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


def load_config_app(module: str) -> Any:
    """Celery's default app configured from ``module``: ``--config``/``CELERY_CONFIG_MODULE``
    without ``-A``, as ``celery --config MODULE status`` honours it.

    The module is imported from the working directory, as Celery's loader does. Unlike Celery,
    which silently falls back to its default broker, a module that cannot be imported is an
    error.

    Raises:
        UsageError: Celery is missing, or the module cannot be imported.
    """
    try:
        celery = importlib.import_module("celery")
    except ImportError as exc:
        raise UsageError(f"--config/CELERY_CONFIG_MODULE needs Celery installed: {exc}.") from exc
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise UsageError(
                f"Cannot import the configuration module {module!r}:\n{traceback.format_exc()}"
            ) from exc
        raise UsageError(
            f"Cannot import the configuration module {module!r} "
            f"(--config/CELERY_CONFIG_MODULE): no module {module!r}."
        ) from exc
    except Exception as exc:
        raise UsageError(
            f"Cannot import the configuration module {module!r}:\n{traceback.format_exc()}"
        ) from exc
    app = celery.Celery(set_as_current=False)
    app.config_from_object(module)
    return app


def app_for(invocation: Invocation) -> Any:
    """The Celery app of a command line: ``-A``; else, as Celery, one configured from
    ``--config``/``CELERY_CONFIG_MODULE``; else None (``-b``/``CELERY_BROKER_URL``/default)."""
    if invocation.app:
        return load_app(invocation.app)
    config = os.environ.get("CELERY_CONFIG_MODULE")
    return load_config_app(config) if config else None


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


async def _execute(
    invocation: Invocation,
    app: Any,
    body: Callable[[Client], Awaitable[int]],
    *,
    retry: bool = False,
) -> int:
    """Connect, run ``body`` on the client, close; broker failures become :class:`CommandError`.

    ``retry``: wait for the broker as long as it takes (a monitor), else within the timeout.
    """
    label = invocation.subcommand
    if invocation.command is not None:
        label += f" {invocation.command}"
    broker_url = invocation.broker
    try:
        client = build_client(invocation, app)
        broker_url = client.transport.url.unredacted()
        try:
            if retry:
                await client.connect(retry=True)
                return await body(client)
            # Connecting is bounded by broker_connection_timeout (the transport's, Celery's 4 s
            # default), not by -t: -t covers only the wait for replies, as in Celery.
            await client.connect()
            return await body(client)
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
