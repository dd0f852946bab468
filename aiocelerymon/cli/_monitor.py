"""The live monitor (the ``tui`` extra) and the dump, shared by ``events`` and ``demo``.

One rule for both: the monitor opens only when stdout is a terminal and neither ``--dump``,
``--json`` nor ``--camera`` was given; otherwise the events are dumped as ``celery events
--dump`` prints them (JSON lines with ``--json``). Celery refuses without a terminal (curses
cannot start); a dump is more useful in a pipe or a file, and is what ``demo`` always did.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Awaitable, Callable

from aiocelerymon.cli._common import EX_OK, Invocation, UsageError
from aiocelerymon.cli._output import Output, _isatty
from aiocelerymon.client import Client
from aiocelerymon.events import Dumper, EventReceiver

#: Celery's first line of ``events --dump``.
DUMP_BANNER = "-> evdump: starting capture..."

#: Celery exits 2 when curses is missing (a click UsageError); so do we without textual.
TUI_MISSING = "The live monitor needs textual: pip install 'aiocelerymon[tui]'."


def wants_monitor(invocation: Invocation, out: Output) -> bool:
    """Whether ``events``/``demo`` open the monitor (see the module's rule) or dump."""
    asked_otherwise = invocation.dump or invocation.json or invocation.camera
    return not asked_otherwise and _isatty(out.stdout)


def start_dump(receiver: EventReceiver, invocation: Invocation, out: Output) -> None:
    """Print the banner and install the dump handler: Celery's lines, or with ``--json`` one
    JSON object per line and nothing else on stdout (the banner goes to stderr, so ``| jq``
    works from the first line)."""
    if invocation.json:
        out.error(DUMP_BANNER)
        receiver.handlers["*"] = lambda ev: out.echo(json.dumps(ev, default=str))
    else:
        out.echo(DUMP_BANNER)
        receiver.handlers["*"] = Dumper(out.stdout).on_event


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
