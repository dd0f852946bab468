"""``create_app(monitor)``: the Starlette app of ``aiocelerymon serve``, importable on its own.

To mount it in your own Starlette/FastAPI service, create the Monitor in your lifespan (or let
this app's lifespan run it when served directly)::

    client = aiocelerymon.Client("redis://localhost:6379/0")
    monitor = Monitor(client)
    app = create_app(monitor)          # serve it: uvicorn.run(app)
    # or: outer.mount("/celery", create_app(monitor, url_prefix=""));
    #     then start it yourself: await client.connect(); await monitor.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from aiocelerymon.web import api, page, push
from aiocelerymon.web._http import JSON
from aiocelerymon.web.inspector import Inspector
from aiocelerymon.web.openapi import openapi_document
from aiocelerymon.web.push import FrameCache

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from aiocelerymon.pipeline import Monitor
    from aiocelerymon.pipeline.history import History

__all__ = ["WebContext", "create_app"]

log = logging.getLogger("aiocelerymon.web")

#: The deadline of the inspection at start (capped: no worker is known to be alive yet).
FIRST_INSPECT_TIMEOUT = 2.0
#: Queues ``/api/queues/length`` reports before any worker listed its own (Celery's default).
DEFAULT_QUEUES = ("celery",)


@dataclass
class WebContext:
    """What every route reads: the monitor, the inspect cache and the deadlines."""

    monitor: Monitor
    inspector: Inspector
    inspect_timeout: float = 1.0
    #: How long ``POST /api/worker/shutdown`` waits for the ``worker-offline`` event.
    shutdown_timeout: float = 5.0
    url_prefix: str = ""
    default_queues: Sequence[str] = DEFAULT_QUEUES
    #: Events queued per push connection before it is told it lagged.
    push_queue_size: int = 1000
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    #: One serialization per event for all push connections.
    push_frames: FrameCache = field(default_factory=FrameCache)
    #: Task history (``aiocelerymon.pipeline.history.History``): routes read tasks no longer
    #: in memory from its store.
    history: History | None = None


def normalize_prefix(prefix: str) -> str:
    """``"flower/"``, ``"/flower"`` -> ``"/flower"``; ``""`` or ``"/"`` -> ``""``."""
    stripped = prefix.strip().strip("/")
    if any(c in stripped for c in "?#{}") or "//" in stripped:
        raise ValueError(f"invalid URL prefix {prefix!r}")
    return f"/{stripped}" if stripped else ""


async def healthcheck(request: Request) -> Response:
    return PlainTextResponse("OK")


async def stats(request: Request) -> Response:
    """The monitor's own health: events, malformed, gaps, lag, push subscribers, ..."""
    ctx: WebContext = request.app.state.aiocelerymon
    return JSON(ctx.monitor.stats.as_dict())


async def openapi(request: Request) -> Response:
    ctx: WebContext = request.app.state.aiocelerymon
    return JSON(openapi_document(ctx.url_prefix))


def create_app(
    monitor: Monitor,
    *,
    security: Any = None,
    url_prefix: str = "",
    inspect_timeout: float = 1.0,
    shutdown_timeout: float | None = None,
    default_queues: Sequence[str] = DEFAULT_QUEUES,
    push_queue_size: int = 1000,
    metrics: ASGIApp | None = None,
    routes: Sequence[BaseRoute] = (),
    history: History | None = None,
) -> Starlette:
    """The web monitor's ASGI app, reading ``monitor``.

    Args:
        security: ``SecuritySettings`` (``aiocelerymon.web.security``); None serves without
            the security middleware (for embedding behind your own).
        url_prefix: serve everything under this path (Flower's ``--url_prefix``).
        inspect_timeout: total deadline of inspect and control calls, seconds.
        metrics: an ASGI app mounted at ``/metrics`` (``aiocelerymon.metrics``).
        routes: more routes, served next to the API (the page of part 2).
        history: the task history (store, cluster, writer): ``/api/tasks`` and
            ``/api/task/info`` also answer from it for tasks no longer in memory.

    When served directly, the app's lifespan starts ``monitor`` (unless already running),
    inspects the workers once as Flower does at start, and closes what it started.
    """
    if not inspect_timeout > 0:
        raise ValueError(f"inspect_timeout must be positive, not {inspect_timeout!r}")
    if push_queue_size < 1:
        raise ValueError(f"push_queue_size must be at least 1, not {push_queue_size!r}")
    prefix = normalize_prefix(url_prefix)
    ctx = WebContext(
        monitor=monitor,
        inspector=Inspector(monitor, inspect_timeout),
        inspect_timeout=inspect_timeout,
        shutdown_timeout=shutdown_timeout or max(inspect_timeout, 5.0),
        url_prefix=prefix,
        default_queues=tuple(default_queues),
        push_queue_size=push_queue_size,
        history=history,
    )
    inner: list[BaseRoute] = [
        Route("/healthcheck", healthcheck, methods=["GET"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/api/stats", stats, methods=["GET"]),
        *api.routes(),
        *push.routes(),
        *routes,
        *page.routes(),  # last: the page's "/" and "/static" never shadow a route given above
    ]
    if metrics is not None:
        # A Route, not a Mount: a Mount answers /metrics with a redirect to /metrics/. Starlette
        # calls a plain function as a request handler, so any ASGI callable is wrapped in an
        # object, which it calls as an ASGI app (GET/HEAD, 405 otherwise).
        inner.append(Route("/metrics", _ASGIEndpoint(metrics)))
    top: list[BaseRoute] = [Mount(prefix, routes=inner)] if prefix else inner

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = not monitor.running
        if owned:
            await monitor.start(wait=False)  # HTTP is up while it waits for the broker
        first = asyncio.ensure_future(_first_inspect(ctx))
        try:
            yield
        finally:
            first.cancel()
            await page.stop_sampler(app.state)
            await ctx.inspector.aclose()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await first
            if owned:
                await monitor.aclose()

    app = Starlette(routes=top, lifespan=lifespan)
    app.state.aiocelerymon = ctx
    page.install(app, monitor)
    if security is not None:
        # The security layer is its own module (aiocelerymon.web.security): a pure ASGI
        # middleware that decides by method and path, relative to the prefix.
        # It is told this app's prefix, whatever the settings say, so the two never disagree.
        middleware = importlib.import_module("aiocelerymon.web.security").SecurityMiddleware
        app.add_middleware(middleware, settings=security, url_prefix=prefix)
    return app


async def _first_inspect(ctx: WebContext) -> None:
    """Flower inspects every worker once at start (``Flower.start``: ``update_workers()``)."""
    try:
        await ctx.monitor.ready.wait()
        await ctx.inspector.first(min(ctx.inspect_timeout, FIRST_INSPECT_TIMEOUT))
    except Exception as exc:  # the next refresh=1 tries again
        log.warning("first inspection of the workers failed: %s", exc)


class _ASGIEndpoint:
    """An ASGI callable that Starlette's ``Route`` serves as an app, whatever its kind."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
