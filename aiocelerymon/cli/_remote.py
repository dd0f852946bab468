"""What ``status``, ``inspect`` and ``control`` share: their options, one broadcast, the replies."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from aiocelerymon.cli._common import (
    DEFAULT_TIMEOUT,
    EX_OK,
    CommandError,
    Context,
    Invocation,
    UsageError,
    _env,
    _env_flag,
    _execute,
    _Parser,
    _transport_option,
)
from aiocelerymon.cli._output import Output
from aiocelerymon.client import Client
from aiocelerymon.control._control import Replies, _matches
from aiocelerymon.control.commands import (
    ArgumentError,
    CommandKind,
    commands_of_kind,
    parse_cli_arguments,
)


def _remote_parser(prog: str, subcommand: str, description: str) -> _Parser:
    takes_command = subcommand != "status"
    usage = f"{prog} {subcommand} [OPTIONS]" + (" COMMAND" if takes_command else "")
    parser = _Parser(
        prog=f"{prog} {subcommand}",
        usage=usage,
        help_command=f"{prog} {subcommand}",
        description=description,
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
        "-p",
        "--pattern",
        metavar="PATTERN",
        help="Address the nodes whose names match PATTERN (see --matcher); with -d, both apply.",
    )
    group.add_argument(
        "--matcher",
        choices=MATCHERS,
        help="How --pattern matches node names: glob (fnmatch, the default) or pcre (re.match).",
    )
    group.add_argument(
        "-j", "--json", action="store_true", default=None, help="Print the answers as JSON."
    )
    group.add_argument(
        "--jsonl",
        action="store_true",
        help="Print one JSON object per answer, {node: answer}, as each arrives.",
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


#: kombu.matcher's two built-in matchers, which Celery workers apply to ``pattern``.
MATCHERS = ("glob", "pcre")


def _targeting(sns: argparse.Namespace, sub: _Parser) -> tuple[str | None, str | None]:
    """``(pattern, matcher)``: kombu's default matcher is glob; a bad regex is a usage error."""
    pattern, matcher = sns.pattern, sns.matcher
    if pattern is None:
        if matcher is not None:
            raise UsageError("--matcher needs --pattern.", sub.usage, sub.help_command)
        return None, None
    if not pattern:
        raise UsageError("--pattern must not be empty.", sub.usage, sub.help_command)
    matcher = matcher or "glob"
    if matcher == "pcre":
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(
                f"Invalid value for '-p' / '--pattern': {pattern!r} is not a valid regular "
                f"expression ({exc}).",
                sub.usage,
                sub.help_command,
            ) from None
    return pattern, matcher


def _split_destination(value: str | None) -> list[str] | None:
    # Celery splits on commas and keeps empty names as they are.
    return None if value is None else value.split(",")


def _remote_invocation(ns: argparse.Namespace, sns: argparse.Namespace, sub: _Parser) -> Invocation:
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
    pattern, matcher = _targeting(sns, sub)
    if sns.jsonl and sns.json:
        raise UsageError("--json and --jsonl exclude each other.", sub.usage, sub.help_command)
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
        jsonl=bool(sns.jsonl),
        pattern=pattern,
        matcher=matcher,
        list=bool(getattr(sns, "list", False)),
    )
    return invocation


async def _collect(
    client: Client, invocation: Invocation, arguments: dict[str, Any], out: Output
) -> int:
    kind = invocation.subcommand
    show_body = kind != "status"
    pattern, matcher = invocation.pattern, invocation.matcher
    command = "ping" if kind == "status" else invocation.command
    assert command is not None
    accepted = Replies()

    def on_reply(reply: dict[str, Any]) -> None:
        # Celery's Inspect filters replies by the pattern again (app/control.py), so a node
        # that ignores it is not shown either.
        if pattern and matcher:
            reply = {n: v for n, v in reply.items() if _matches(n, pattern, matcher)}
            if not reply:
                return
        accepted.append(reply)
        if invocation.jsonl:
            out.echo(json.dumps(reply))
        elif not invocation.json:
            out.reply(reply, show_body)

    await client.control.broadcast(
        command,
        arguments,
        destination=invocation.destination,
        reply=True,
        timeout=invocation.timeout,
        callback=on_reply,
        pattern=pattern,
        matcher=matcher,
    )
    replies = accepted
    if invocation.jsonl:
        if not replies:
            raise CommandError("No nodes replied within time constraint")
        return EX_OK
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


async def _run_command(ctx: Context, kind: CommandKind) -> int:
    """``inspect``/``control``: ``--list``, or one catalogue command with its arguments."""
    invocation, sub, out = ctx.invocation, ctx.parser, ctx.out
    if invocation.list:
        out.command_list(kind, ctx.catalogue)
        return EX_OK
    offered = commands_of_kind(kind, ctx.catalogue)
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
    return await _execute(
        invocation, ctx.app, lambda client: _collect(client, invocation, arguments, out)
    )
