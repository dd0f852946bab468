"""``/api/page/live``: the page's own push stream, one digest frame per tick for every page.

``/api/events/ws`` sends every event to every connection: right for the event tail and for
scripts, but ten open pages would cost the server ten frames per event. A page only needs to
know *what changed*: here one Monitor listener notes the task ids and worker names touched
(a dictionary store per event), and every ``interval`` (250 ms) one frame is built and the same
bytes are queued to every page connection::

    {"kind": "digest", "events": 1234, "more": 0,
     "tasks": [{"uuid", "name", "state", "worker"}, ...],        # at most MAX_TASKS, newest
     "workers": [{"hostname", "alive", "active", "processed"}, ...]}

so the server's cost per event does not grow with the number of pages. A connection that
cannot keep up loses frames and is then sent ``{"kind": "resync"}`` (the page reloads what it
shows); ingestion never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from aiocelerymon.web._http import dumps
from aiocelerymon.web.push import _serve_websocket

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiocelerymon.pipeline import Monitor

__all__ = ["LiveDigest", "routes"]

log = logging.getLogger("aiocelerymon.web")

INTERVAL = 0.25
#: Task ids per frame; beyond it the page is told how many more changed (it reloads anyway).
MAX_TASKS = 500
#: Frames queued per connection before it is considered lagging.
QUEUE = 16
RESYNC = dumps({"kind": "resync"})


class _Connection:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE)
        self.lagged = False

    def offer(self, frame: bytes) -> None:
        if self.lagged and self.queue.qsize() < QUEUE - 1:
            self.queue.put_nowait(RESYNC)
            self.lagged = False
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.lagged = True


class LiveDigest:
    """What changed since the last tick, sent to every page connection as one frame."""

    def __init__(self, monitor: Monitor, interval: float = INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        self.monitor = monitor
        self.interval = interval
        self.connections: set[_Connection] = set()
        self._tasks: dict[str, None] = {}
        self._workers: dict[str, None] = {}
        self._events = 0
        self._ticker: asyncio.Task[None] | None = None

    def on_event(self, event: dict[str, Any], state: Any) -> None:
        """The Monitor listener: note what the event touched, nothing more."""
        if not self.connections:
            return
        self._events += 1
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        if kind.startswith("task-"):
            uuid = event.get("uuid")
            if isinstance(uuid, str):
                tasks = self._tasks
                tasks.pop(uuid, None)
                tasks[uuid] = None
        elif kind.startswith("worker-"):
            hostname = event.get("hostname")
            if isinstance(hostname, str):
                self._workers[hostname] = None

    def frame(self) -> bytes | None:
        """The digest of what changed since the last call, or None if nothing did."""
        if not self._events:
            return None
        state = self.monitor.state
        uuids = list(self._tasks)
        more = max(0, len(uuids) - MAX_TASKS)
        tasks = []
        for uuid in uuids[more:]:
            task = state.tasks.data.get(uuid)
            if task is not None:
                worker = task.worker
                tasks.append({"uuid": uuid, "name": task.name, "state": task.state,
                              "worker": getattr(worker, "hostname", None)})  # fmt: skip
        workers = []
        for hostname in self._workers:
            w = state.workers.data.get(hostname)
            if w is not None:
                workers.append({"hostname": w.hostname, "alive": w.alive, "active": w.active,
                                "processed": w.processed})  # fmt: skip
        data = {"kind": "digest", "events": self._events, "more": more, "tasks": tasks,
                "workers": workers}  # fmt: skip
        self._tasks, self._workers, self._events = {}, {}, 0
        return dumps(data)

    def tick(self) -> None:
        frame = self.frame()
        if frame is not None:
            for connection in self.connections:
                connection.offer(frame)

    async def _run(self) -> None:
        while self.connections:
            await asyncio.sleep(self.interval)
            try:
                self.tick()
            except Exception:  # one bad tick must not end the page's live view
                log.exception("page digest failed")

    def connect(self) -> _Connection:
        connection = _Connection()
        self.connections.add(connection)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._run())
        return connection

    def disconnect(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._tasks, self._workers, self._events = {}, {}, 0

    async def aclose(self) -> None:
        self.connections.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(BaseException):
                await self._ticker


async def page_live(websocket: WebSocket) -> None:
    digest: LiveDigest = websocket.app.state.aiocelerymon_digest
    connection = digest.connect()

    async def frames() -> AsyncIterator[str]:
        while True:
            yield (await connection.queue.get()).decode()

    try:
        await _serve_websocket(websocket, frames())
    finally:
        digest.disconnect(connection)


def routes() -> list[BaseRoute]:
    return [WebSocketRoute("/api/page/live", page_live)]
