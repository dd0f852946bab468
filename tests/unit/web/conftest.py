"""A tiny Starlette app behind SecurityMiddleware, a fake clock and a recording sleep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("starlette")

from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from aiocelerymon.web.security import SecurityMiddleware, SecuritySettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records each delay a failing request asked for, instead of waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


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


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(clock: Clock, sleeps: Sleeps) -> Callable[..., TestClient]:
    """``make_client(settings, prefix="", client=("203.0.113.5", 1234), base_url=...)``;
    ``app=`` reuses another client's middleware (and so its failure counters)."""
    clients: list[TestClient] = []

    def make(
        settings: SecuritySettings | None = None,
        *,
        app: SecurityMiddleware | None = None,
        prefix: str = "",
        client: tuple[str, int] = ("203.0.113.5", 1234),
        base_url: str = "http://monitor.example",
        **kwargs: Any,
    ) -> TestClient:
        if app is None:
            assert settings is not None
            app = SecurityMiddleware(build_app(prefix), settings, clock=clock, sleep=sleeps)
        test_client = TestClient(
            app, base_url=base_url, client=client, follow_redirects=False, **kwargs
        )
        clients.append(test_client)
        return test_client

    yield make  # type: ignore[misc]
    for test_client in clients:
        test_client.close()
