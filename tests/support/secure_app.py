"""A tiny Starlette app to put SecurityMiddleware in front of (unit and real-server tests)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket


async def whoami(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse(
        {
            "user": user.display_name,
            "role": str(user.role),
            "authenticated": user.is_authenticated,
            "scopes": list(request.auth.scopes),
            "client": request.client.host if request.client else None,
            "scheme": request.url.scheme,
            "host": request.headers.get("host"),
            "forwarded_for": request.headers.get("x-forwarded-for"),
            "root_path": request.scope.get("root_path", ""),
        }
    )


async def control(request: Request) -> JSONResponse:
    return JSONResponse({"done": request.path_params["worker"], "by": request.user.display_name})


@requires("operator")
async def starlette_guarded(request: Request) -> PlainTextResponse:
    return PlainTextResponse("guarded")


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("OK")


async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse("celery_workers 1\n")


async def asset(request: Request) -> PlainTextResponse:
    return PlainTextResponse("export {};", media_type="text/javascript")


async def events(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"user": websocket.scope["user"].display_name})
    await websocket.close()


ROUTES = [
    Route("/", whoami),
    Route("/api/workers", whoami, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    Route("/api/worker/shutdown/{worker}", control, methods=["POST"]),
    Route("/api/guarded", starlette_guarded),
    Route("/healthcheck", health),
    Route("/metrics", metrics),
    Route("/static/app.js", asset),
    Route("/static/{rest:path}", asset),
    WebSocketRoute("/api/events", events),
]


def build_app(prefix: str = "") -> Starlette:
    return Starlette(routes=[Mount(prefix, routes=ROUTES)] if prefix else list(ROUTES))
