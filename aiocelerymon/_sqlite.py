"""Opening an aiosqlite connection whose worker thread never outlives the event loop.

Shared by the result backend's SQLite reader and the history store's SQLite adapter. aiosqlite
runs each connection on a thread that answers through the loop. When connecting fails or is
cancelled (a timeout), aiosqlite stops that thread without waiting for it, and a thread that
answers after the loop closed dies with "Event loop is closed". So the open runs shielded: on
failure the thread is joined, on cancellation a connection opened meanwhile is closed, before
the error propagates.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["open_sqlite"]


async def open_sqlite(database: str, **kwargs: Any) -> Any:
    """``await aiosqlite.connect(database, **kwargs)``, without a stray thread on failure."""
    import aiosqlite

    connection = aiosqlite.connect(database, **kwargs)

    async def opened() -> Any:
        return await connection

    opening = asyncio.ensure_future(opened())
    try:
        return await asyncio.shield(opening)
    except BaseException:
        # Cancelled while opening: let the connector finish (a local sqlite3.connect is quick).
        await asyncio.wait([opening])
        if not opening.cancelled() and opening.exception() is None:
            await connection.close()  # waits for the thread to stop
        else:
            # aiosqlite queued the thread's stop itself; wait until it has run.
            await asyncio.to_thread(connection._thread.join)
        raise
