"""``GET /api/workers``: Flower's inspector cache, refreshed on request."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aiocelerymon.exceptions import AiocelerymonError
from aiocelerymon.web._http import JSON, Arguments, error
from aiocelerymon.web.api._common import context


async def list_workers(request: Request) -> Response:
    """Flower's ListWorkers: ``refresh``, ``workername``, ``status``."""
    ctx = context(request)
    args = Arguments(request)
    refresh = args.flag("refresh")
    status = args.flag("status")
    workername = args.text("workername")
    inspector = ctx.inspector
    if refresh:
        try:
            await inspector.refresh(workername)
        except (AiocelerymonError, OSError) as exc:
            raise error(503, f"Failed to update workers: {exc}") from exc
    if status:
        return JSON({str(name): w.alive for name, w in ctx.monitor.state.workers.items()})
    workers = inspector.workers
    if workername:
        if workername not in workers:
            raise error(404, f"Unknown worker '{workername}'")
        return JSON({workername: workers[workername]})
    return JSON(workers)


def routes() -> list[BaseRoute]:
    return [Route("/api/workers", list_workers, methods=["GET"])]
