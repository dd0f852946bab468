"""``aiocelerymon status``: ``celery status``, the workers that answer a ping."""

from __future__ import annotations

from aiocelerymon.cli._common import Context, Verb, _execute, _Parser
from aiocelerymon.cli._remote import _collect, _remote_invocation, _remote_parser


def _parser(prog: str) -> _Parser:
    return _remote_parser(prog, "status", "Ping the workers and list those that answer.")


async def _run(ctx: Context) -> int:
    invocation, out = ctx.invocation, ctx.out
    return await _execute(invocation, ctx.app, lambda client: _collect(client, invocation, {}, out))


VERB = Verb(
    name="status",
    summary="Show which workers answer a ping.",
    parser=_parser,
    invocation=_remote_invocation,
    run=_run,
)
