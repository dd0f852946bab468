"""Which task queues ``queues`` and ``purge`` work on: -Q, -X, else the app's and the workers'."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from aiocelerymon.cli._common import DEFAULT_TIMEOUT, CommandError, Invocation, _Parser
from aiocelerymon.client import Client


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
