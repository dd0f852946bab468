"""``aiocelerymon inspect|control|status``: Celery's remote-control commands, output for output.

A drop-in for ``celery inspect``, ``celery control`` and ``celery status`` (Celery 5.5-5.7): the
same options, arguments, text and JSON output, and exit codes, so scripts that parse Celery's
output keep working. Differences are improvements: with ``-d`` it returns as soon as every
named node answered, an unreachable broker is reported within the timeout (Celery retries for
seconds), and a malformed argument is a usage error instead of a traceback.

Usage::

    aiocelerymon [-A APP] [-b URL] [-C] [-q] [--control-exchange NAME]
                 [--transport-option KEY=VALUE ...] COMMAND ...

    aiocelerymon status  [-t SECONDS] [-d NODE[,NODE...]] [-j]
    aiocelerymon inspect [-t SECONDS] [-d NODE[,NODE...]] [-j] [--list] NAME [ARG ...]
    aiocelerymon control [-t SECONDS] [-d NODE[,NODE...]] [-j] [--list] NAME [ARG ...]
    aiocelerymon events  [--dump [-j] | --camera CLASS] [--limit N] [--duration SECONDS]
    aiocelerymon queues  [-Q a,b] [-X c] [-j] [--watch [SECONDS]] [--count N]
    aiocelerymon purge   [-Q a,b] [-X c] [-f]
    aiocelerymon serve   [--address HOST] [--port PORT] [--url-prefix PATH] ...
    aiocelerymon result  [-t TASK] [--traceback] [-j] [--wait SECONDS] TASK_ID
    aiocelerymon shell   [--without-tasks]
    aiocelerymon demo    [--dump [-j]] [--limit N] [--duration SECONDS] [--rate N]

``events`` without ``--dump``/``--camera`` opens the live monitor (the ``tui`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO

from aiocelerymon._version import __version__
from aiocelerymon.cli import (
    control,
    demo,
    events,
    inspect,
    purge,
    queues,
    result,
    serve,
    shell,
    status,
)
from aiocelerymon.cli._common import (
    EX_FAILURE,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    CommandError,
    Context,
    Invocation,
    UsageError,
    Verb,
    _env,
    _Exit,
    _ExitWith,
    _Parser,
    build_client,
    catalogue_for,
    load_app,
)
from aiocelerymon.cli._output import Output

__all__ = [
    "EX_FAILURE",
    "EX_OK",
    "EX_UNAVAILABLE",
    "EX_USAGE",
    "VERBS",
    "CommandError",
    "Invocation",
    "UsageError",
    "Verb",
    "build_client",
    "load_app",
    "main",
    "parse_args",
    "run",
]

#: Every verb, in the order ``--help`` lists them. A new verb: a module with a ``VERB``, one line.
VERBS: tuple[Verb, ...] = (
    status.VERB,
    inspect.VERB,
    control.VERB,
    events.VERB,
    queues.VERB,
    purge.VERB,
    serve.VERB,
    result.VERB,
    shell.VERB,
    demo.VERB,
)
_BY_NAME = {verb.name: verb for verb in VERBS}
SUBCOMMANDS = tuple(sorted(_BY_NAME))


def _top_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [OPTIONS] COMMAND [ARGS]...",
        help_command=prog,
        description=(
            "Inspect and control Celery workers over their remote-control mailbox, "
            "as `celery inspect|control|status` do."
        ),
        epilog="commands:\n" + "".join(f"  {v.name:<10}{v.summary}\n" for v in VERBS),
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
    group.add_argument(
        "--result-backend", metavar="URL", help="Result backend URL (overrides the app's)."
    )
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

    verb = _BY_NAME[ns.subcommand]
    sub = verb.parser(prog)
    sns = sub.parse_intermixed_args(ns.rest)
    if sns.help:
        raise _ExitWith(sub.format_help().rstrip("\n"), EX_OK)
    return verb.invocation(ns, sns, sub), sub


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
        verb = _BY_NAME[invocation.subcommand]
        return await verb.run(Context(invocation, sub, app, catalogue, out, stdin))
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
