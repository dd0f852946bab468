"""``aiocelerymon control``: ``celery control``, one command of the catalogue to the workers."""

from __future__ import annotations

from aiocelerymon.cli._common import Context, Verb, _Parser
from aiocelerymon.cli._remote import _remote_invocation, _remote_parser, _run_command


def _parser(prog: str) -> _Parser:
    return _remote_parser(
        prog,
        "control",
        "Send the control command COMMAND to the workers and print their answers.",
    )


async def _run(ctx: Context) -> int:
    return await _run_command(ctx, "control")


VERB = Verb(
    name="control",
    summary="Change the workers' behaviour (NAME: see `control --list`).",
    parser=_parser,
    invocation=_remote_invocation,
    run=_run,
)
