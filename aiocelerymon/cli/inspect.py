"""``aiocelerymon inspect``: ``celery inspect``, one query of the catalogue to the workers."""

from __future__ import annotations

from aiocelerymon.cli._common import Context, Verb, _Parser
from aiocelerymon.cli._remote import _remote_invocation, _remote_parser, _run_command


def _parser(prog: str) -> _Parser:
    return _remote_parser(
        prog,
        "inspect",
        "Send the inspect command COMMAND to the workers and print their answers.",
    )


async def _run(ctx: Context) -> int:
    return await _run_command(ctx, "inspect")


VERB = Verb(
    name="inspect",
    summary="Query the workers (NAME: see `inspect --list`).",
    parser=_parser,
    invocation=_remote_invocation,
    run=_run,
)
