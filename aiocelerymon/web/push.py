"""Live push: the event stream over WebSocket (``/api/events/ws``) and SSE (``/api/events``).

Each connection is one bounded :class:`~aiocelerymon.pipeline.Subscriber`; ingestion never
waits for it. A client that reads too slowly loses its backlog and is sent
``{"kind": "lagged", "missed": n}`` followed by ``{"kind": "resync", ...}`` (the workers and
the newest matching tasks as the State has them now), and the stream goes on. Filters
(repeatable, or comma-separated; shell globs allowed): ``type``, ``worker``, ``taskname``,
``state``. ``snapshot=1`` starts with a resync.

Messages (one JSON object per WebSocket text frame, or per SSE ``data:`` line)::

    {"kind": "event", "event": {...as Celery sent it...},
     "task": {"uuid", "name", "state", "worker"}}            # task events
    {"kind": "event", "event": {...}, "worker": {"hostname", "alive", "active", "processed"}}
    {"kind": "lagged", "missed": 1234}
    {"kind": "resync", "workers": {...}, "tasks": [...]}

Flower < 1.1's event API is kept as well: ``/api/task/events/<type>/<task id or empty>``
(WebSocket) sends the bare event dicts of that type.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from aiocelerymon.pipeline import EventFilter, Filter, Lagged, Subscriber
from aiocelerymon.web._http import Arguments, dumps, error
from aiocelerymon.web.api.tasks import task_dict

if TYPE_CHECKING:
    from aiocelerymon.events import State
    from aiocelerymon.web.app import WebContext

__all__ = ["routes"]

#: Tasks in a resync message, by default and at most.
RESYNC_TASKS = 100
RESYNC_TASKS_MAX = 1000
#: The SSE comment sent when nothing happened for this long (keeps proxies from timing out).
SSE_KEEPALIVE = 15.0
#: A sender gives the event loop a turn after this many frames: with a full queue neither
#: ``get`` nor a send into a non-full socket buffer suspends, and one busy connection must
#: not starve ingestion, other connections or keepalive pings.
FAIR_SHARE = 32
#: Serialized messages kept for the other connections that send the same event.
FRAME_CACHE = 4096


class FrameCache:
    """One serialization per event, whatever the number of connections sending it.

    Keyed by the event dict's identity (the hub hands every subscriber the same object); the
    object is kept with its frame so a recycled ``id`` can never match.
    """

    def __init__(self, size: int = FRAME_CACHE) -> None:
        self.size = size
        self._frames: dict[int, tuple[dict[str, Any], bytes]] = {}

    def frame(self, event: dict[str, Any], state: State) -> bytes:
        key = id(event)
        hit = self._frames.get(key)
        if hit is not None and hit[0] is event:
            return hit[1]
        data = dumps(_message(event, state))
        frames = self._frames
        if len(frames) >= self.size:
            del frames[next(iter(frames))]  # oldest first: dicts keep insertion order
        frames[key] = (event, data)
        return data


def _filter(args: Arguments) -> EventFilter:
    return EventFilter(
        types=args.all("type"),
        workers=args.all("worker") + args.all("workername"),
        task_names=args.all("taskname"),
        states=args.all("state"),
    )


def _worker_summary(worker: Any) -> dict[str, Any]:
    return {
        "hostname": worker.hostname,
        "alive": worker.alive,
        "active": worker.active,
        "processed": worker.processed,
    }


def _message(event: dict[str, Any], state: State) -> dict[str, Any]:
    message: dict[str, Any] = {"kind": "event", "event": event}
    kind = event.get("type")
    if isinstance(kind, str) and kind.startswith("task-"):
        task = state.tasks.data.get(event.get("uuid"))
        if task is not None:
            worker = task.worker
            message["task"] = {
                "uuid": task.uuid,
                "name": task.name,
                "state": task.state,
                "worker": getattr(worker, "hostname", None),
            }
    elif isinstance(kind, str) and kind.startswith("worker-"):
        worker = state.workers.data.get(event.get("hostname"))
        if worker is not None:
            message["worker"] = _worker_summary(worker)
    return message


def _resync(state: State, flt: EventFilter, limit: int) -> dict[str, Any]:
    workers = {str(name): _worker_summary(w) for name, w in state.workers.items()}
    tasks: list[dict[str, Any]] = []
    if limit:
        for _, task in state.tasks_by_time():
            if flt.task_matches(task):
                tasks.append(task_dict(task))
                if len(tasks) >= limit:
                    break
    return {"kind": "resync", "workers": workers, "tasks": tasks}


class _Stream:
    """One push connection's settings and its subscriber."""

    def __init__(self, ctx: WebContext, args: Arguments) -> None:
        self.ctx = ctx
        self.filter = _filter(args)
        self.snapshot = args.flag("snapshot")
        limit = args.integer("resync_limit", RESYNC_TASKS)
        if not 0 <= limit <= RESYNC_TASKS_MAX:
            raise error(400, f"resync_limit must be between 0 and {RESYNC_TASKS_MAX}")
        self.resync_limit = limit
        flt: Filter | None = None if self.filter.empty else self.filter
        self.sub: Subscriber = ctx.monitor.subscribe(maxsize=ctx.push_queue_size, filter=flt)

    def resync(self) -> bytes:
        return dumps(_resync(self.ctx.monitor.state, self.filter, self.resync_limit))

    async def messages(self) -> AsyncGenerator[bytes, None]:
        state = self.ctx.monitor.state
        frames = self.ctx.push_frames
        if self.snapshot:
            yield self.resync()
        sent = 0
        async for item in self.sub:
            if isinstance(item, Lagged):
                yield dumps({"kind": "lagged", "missed": item.missed})
                yield self.resync()
            else:
                yield frames.frame(item, state)
            sent += 1
            if sent % FAIR_SHARE == 0:
                await asyncio.sleep(0)

    def close(self) -> None:
        self.sub.close()


def _ctx(conn: Request | WebSocket) -> WebContext:
    ctx: WebContext = conn.app.state.aiocelerymon
    return ctx


async def _serve_websocket(websocket: WebSocket, frames: AsyncIterator[str]) -> None:
    """Send ``frames`` until the client leaves or the stream ends; reads only to see a close."""
    await websocket.accept()

    async def drain() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    reader = asyncio.ensure_future(drain())
    sender = asyncio.ensure_future(_send_all(websocket, frames))
    try:
        await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, sender):
            task.cancel()
        for task in (reader, sender):
            with contextlib.suppress(BaseException):
                await task
    if sender.done() and not sender.cancelled() and sender.exception() is None:
        with contextlib.suppress(Exception):
            await websocket.close(1001)  # the server is going away


async def _send_all(websocket: WebSocket, frames: AsyncIterator[str]) -> None:
    async for frame in frames:
        await websocket.send_text(frame)


async def events_websocket(websocket: WebSocket) -> None:
    try:
        stream = _Stream(_ctx(websocket), Arguments(websocket))  # type: ignore[arg-type]
    except Exception as exc:
        await websocket.close(1008, str(getattr(exc, "detail", exc))[:120])
        return

    async def frames() -> AsyncIterator[str]:
        async for message in stream.messages():
            yield message.decode()

    try:
        await _serve_websocket(websocket, frames())
    finally:
        stream.close()


async def events_sse(request: Request) -> Response:
    stream = _Stream(_ctx(request), Arguments(request))

    async def body() -> AsyncIterator[bytes]:
        messages = stream.messages()
        try:
            yield b": aiocelerymon event stream\n\n"
            while True:
                try:
                    message = await asyncio.wait_for(anext(messages), SSE_KEEPALIVE)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                except StopAsyncIteration:
                    return
                yield b"data: " + message + b"\n\n"
        finally:
            stream.close()
            await messages.aclose()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def flower_task_events(websocket: WebSocket) -> None:
    """Flower 1.0's ``/api/task/events/<type>/<id>``: bare event dicts of one type."""
    ctx = _ctx(websocket)
    kind = str(websocket.path_params["event_type"])
    taskid = str(websocket.path_params.get("taskid") or "")
    types = EventFilter(types=[kind])

    def check(event: dict[str, Any], state: State) -> bool:
        return types(event, state) and (not taskid or event.get("uuid") == taskid)

    sub = ctx.monitor.subscribe(maxsize=ctx.push_queue_size, filter=check)

    async def frames() -> AsyncIterator[str]:
        sent = 0
        async for item in sub:
            if not isinstance(item, Lagged):
                yield dumps(item).decode()
                sent += 1
                if sent % FAIR_SHARE == 0:
                    await asyncio.sleep(0)

    try:
        await _serve_websocket(websocket, frames())
    finally:
        sub.close()


def routes() -> list[BaseRoute]:
    return [
        Route("/api/events", events_sse, methods=["GET"]),
        WebSocketRoute("/api/events/ws", events_websocket),
        WebSocketRoute("/api/task/events/{event_type}/{taskid:path}", flower_task_events),
    ]
