"""The live monitor (the ``tui`` extra), shared by ``events`` and ``demo``."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable

from aiocelerymon.cli._common import EX_OK, Invocation, UsageError
from aiocelerymon.client import Client

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
