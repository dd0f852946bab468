"""ASGI endpoints: ``metrics_route`` for the web app's ``/metrics``, and the exporter's app.

Plain ASGI (no framework), so Starlette mounts them (``Route("/metrics", metrics_route(c))``:
an endpoint that is not a function is called as an ASGI app) and uvicorn serves them alone.
Rendering runs on the event loop, where the collector is fed: it must not race the listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiocelerymon.metrics._text import CONTENT_TYPE
from aiocelerymon.metrics.collector import MetricsCollector

__all__ = ["ExporterApp", "MetricsEndpoint", "metrics_route"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_INDEX = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aiocelerymon exporter</title></head>
<body><h1>aiocelerymon exporter</h1><p><a href="metrics">Metrics</a></p></body></html>
"""


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    *,
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _not_http(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1003})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


class MetricsEndpoint:
    """``GET``/``HEAD``: the collector's metrics in Prometheus text format; 405 otherwise."""

    def __init__(self, collector: MetricsCollector) -> None:
        self.collector = collector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _not_http(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(
                send,
                405,
                b"Method Not Allowed\n",
                b"text/plain; charset=utf-8",
                extra=[(b"allow", b"GET, HEAD")],
            )
            return
        body = self.collector.render()
        await _respond(send, 200, body, CONTENT_TYPE.encode(), head=method == "HEAD")


def metrics_route(collector: MetricsCollector) -> MetricsEndpoint:
    """The ASGI endpoint the web app mounts at ``/metrics`` (its security middleware decides
    who may read it)."""
    return MetricsEndpoint(collector)


class ExporterApp:
    """``aiocelerymon exporter``'s whole app: ``/`` (a link), ``/metrics``, ``/health``.

    ``/health`` answers 200 while ``healthy()`` is true (the event subscription is live) and
    503 otherwise, so an orchestrator restarts an exporter that went blind.
    """

    def __init__(self, collector: MetricsCollector, healthy: Callable[[], bool]) -> None:
        self.metrics = MetricsEndpoint(collector)
        self.healthy = healthy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _not_http(scope, receive, send)
            return
        path = scope.get("path", "/")
        if path == "/metrics":
            await self.metrics(scope, receive, send)
            return
        method = scope.get("method", "GET")
        text = b"text/plain; charset=utf-8"
        if path not in ("/", "/health"):
            await _respond(send, 404, b"Not Found\n", text)
        elif method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b"Method Not Allowed\n", text, extra=[(b"allow", b"GET, HEAD")]
            )
        elif path == "/":
            await _respond(send, 200, _INDEX, b"text/html; charset=utf-8", head=method == "HEAD")
        elif self.healthy():
            await _respond(send, 200, b"OK\n", text, head=method == "HEAD")
        else:
            await _respond(send, 503, b"event stream not connected\n", text, head=method == "HEAD")
