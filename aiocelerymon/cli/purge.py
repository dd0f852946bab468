"""``aiocelerymon purge``: ``celery purge``, never touching remote-control or event queues."""

from __future__ import annotations

import asyncio
import sys
from typing import IO, Any

from aiocelerymon.cli._common import (
    EX_FAILURE,
    EX_OK,
    Context,
    Invocation,
    UsageError,
    Verb,
    _broker_chore_invocation,
    _execute,
    _Parser,
)
from aiocelerymon.cli._output import _ANSI, Output, _isatty
from aiocelerymon.cli._task_queues import _queue_options, task_queues
from aiocelerymon.client import Client


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


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


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


async def _run(ctx: Context) -> int:
    invocation, app, out, stdin = ctx.invocation, ctx.app, ctx.out, ctx.stdin
    return await _execute(
        invocation,
        app,
        lambda client: _run_purge(client, invocation, app, out, stdin or sys.stdin),
    )


VERB = Verb(
    name="purge",
    summary="Delete the waiting messages of task queues.",
    parser=_purge_parser,
    invocation=lambda ns, sns, _sub: _broker_chore_invocation(ns, sns),
    run=_run,
)
