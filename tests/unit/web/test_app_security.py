"""Every route of ``create_app`` behind the security layer: the unauthenticated are refused,
viewers read but never control, operators and tokens get through, cookies need the CSRF token.

The routes are walked from the app itself and from its OpenAPI document, so a route added
later is covered without touching this file. The cluster is the in-memory broker (a product
transport with the same contract as the real ones); what is judged here is who gets in.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

import aiocelerymon
from aiocelerymon.demo import DemoCluster
from aiocelerymon.pipeline import Monitor
from aiocelerymon.web import create_app
from aiocelerymon.web.openapi import openapi_document
from aiocelerymon.web.passwords import hash_token
from aiocelerymon.web.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    ApiToken,
    PasswordUser,
    Role,
    SecuritySettings,
)

OPERATOR = ("olga", "olga-password")
VIEWER = ("victor", "victor-password")
OPERATOR_TOKEN = "operator-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789"
PUBLIC = {"/healthcheck"}
SAMPLE = {
    "workername": "w1@example",
    "taskid": "d9c1c0a4-8c39-4d8e-bf40-6f4b1f1f0001",
    "taskname": "proj.add",
    "event_type": "task-succeeded",
}


def settings(**overrides: Any) -> SecuritySettings:
    options: dict[str, Any] = {
        "users": [
            PasswordUser.plain(*OPERATOR, role=Role.OPERATOR),
            PasswordUser.plain(*VIEWER, role=Role.VIEWER),
        ],
        "tokens": [
            ApiToken.hashed("ops-bot", hash_token(OPERATOR_TOKEN), Role.OPERATOR),
            ApiToken.hashed("dashboard", hash_token(VIEWER_TOKEN), Role.VIEWER),
        ],
        "failure_delay": 0.0,
        "failure_limit": 1000,
    }
    options.update(overrides)
    return SecuritySettings(**options)


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route | WebSocketRoute):
            yield prefix + route.path, route


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: SAMPLE.get(m.group(1), "x"), path)


def http_routes(app: Any) -> list[tuple[str, str]]:
    found = []
    for path, route in walk(list(app.routes)):
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, concrete(path)))
    return found


def websocket_routes(app: Any) -> list[str]:
    return [concrete(p) for p, r in walk(list(app.routes)) if isinstance(r, WebSocketRoute)]


#: What SecurityMiddleware says when it refuses (a route may answer 403 for its own reasons:
#: Flower's control routes do when a worker replies with an error).
SECURITY_REFUSAL = re.compile(
    r"authentication required|invalid token|invalid user name|operator role|read-only mode"
    r"|CSRF token|cross-origin|Host not allowed|no role|too many failed"
)


def refused_by_security(answer: tuple[int, bytes]) -> bool:
    status, body = answer
    return status in (401, 403, 429) and bool(SECURITY_REFUSAL.search(body.decode("latin-1")))


async def status_of(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> int:
    """The status the app starts to answer with; streams (SSE) are cut off after it."""
    return (await answer_of(app, method, path, headers, body))[0]


async def answer_of(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    """The status and the first body chunk of the app's answer."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(), "root_path": "",
        "query_string": query.encode(), "client": ("192.0.2.10", 4000),
        "server": ("127.0.0.1", 5555),
        "headers": [(b"host", b"127.0.0.1:5555")]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }  # fmt: skip
    started: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
    status = 0
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not started.done():
            started.set_result((status, message.get("body", b"")))

    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        async with asyncio.timeout(10):
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            task.result()  # raise what the app raised
        return started.result()
    finally:
        task.cancel()
        with pytest.raises((asyncio.CancelledError, Exception)):
            await task
            raise asyncio.CancelledError


async def websocket_outcome(app: Any, path: str, headers: dict[str, str] | None = None) -> str:
    """``accept`` or ``close:<code>``: the app's first answer to a WebSocket handshake."""
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": path,
        "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "client": ("192.0.2.10", 4000), "server": ("127.0.0.1", 5555), "subprotocols": [],
        "headers": [(b"host", b"127.0.0.1:5555")]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }  # fmt: skip
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    connected = False

    async def receive() -> dict[str, Any]:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if not first.done():
            kind = message["type"]
            first.set_result(
                "accept" if kind == "websocket.accept" else f"close:{message.get('code')}"
            )

    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        async with asyncio.timeout(10):
            await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():
            task.result()
        return first.result()
    finally:
        task.cancel()
        with pytest.raises((asyncio.CancelledError, Exception)):
            await task
            raise asyncio.CancelledError


def basic(user: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": httpx2.BasicAuth(*user)._auth_header}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    async with aiocelerymon.Client(f"memory://web-sec-{uuid.uuid4().hex}") as client:
        monitor = Monitor(client)
        await monitor.start()
        try:
            yield monitor
        finally:
            await monitor.aclose()


def app_for(monitor: Monitor, **kwargs: Any) -> Any:
    kwargs.setdefault("security", settings())
    return create_app(monitor, inspect_timeout=0.2, **kwargs)


def test_the_walk_finds_the_api() -> None:
    # The walk must see the routes the issue lists, or the tests below prove nothing.
    app = create_app(Monitor(aiocelerymon.Client("memory://walk")), security=settings())
    routes = http_routes(app)
    assert ("GET", "/api/workers") in routes
    assert ("POST", f"/api/task/revoke/{SAMPLE['taskid']}") in routes
    assert sum(method == "POST" for method, _ in routes) >= 11  # Flower 2.2 has 11
    assert websocket_routes(app)


async def test_every_route_refuses_the_unauthenticated(monitor):
    app = app_for(monitor)
    for method, path in http_routes(app):
        expected = 200 if path in PUBLIC else 401
        assert await status_of(app, method, path) == expected, (method, path)
        bad = {"Authorization": "Bearer not-a-valid-token-at-all"}
        if path not in PUBLIC:
            assert await status_of(app, method, path, bad) == 401, (method, path)
    for path in websocket_routes(app):
        assert await websocket_outcome(app, path) == "close:1008", path


async def test_every_openapi_operation_refuses_the_unauthenticated(monitor):
    app = app_for(monitor)
    document = openapi_document("")
    operations = [(m.upper(), concrete(p)) for p, ops in document["paths"].items() for m in ops]
    assert len(operations) >= 15
    for method, path in operations:
        expected = 200 if path in PUBLIC else 401
        assert await status_of(app, method, path) == expected, (method, path)


@pytest.mark.parametrize("credentials", [basic(VIEWER), bearer(VIEWER_TOKEN)])
async def test_viewers_read_but_never_control(monitor, credentials):
    app = app_for(monitor)
    for method, path in http_routes(app):
        status = await status_of(app, method, path, credentials)
        if method in ("GET", "HEAD"):
            assert status not in (401, 403), (method, path, status)
        else:
            assert status == 403, (method, path, status)
    for path in websocket_routes(app):
        assert await websocket_outcome(app, path, credentials) == "accept", path


@pytest.mark.parametrize("credentials", [basic(OPERATOR), bearer(OPERATOR_TOKEN)])
async def test_operators_and_tokens_get_through(monitor, credentials, caplog):
    # A simulated worker on the same broker answers the control commands.
    worker = DemoCluster(monitor.client, nodes=[SAMPLE["workername"]], rate=0)
    await worker.start(produce=False)
    async with asyncio.timeout(10):
        while SAMPLE["workername"] not in monitor.state.workers:
            await asyncio.sleep(0.01)
    app = app_for(monitor)
    caplog.set_level(logging.INFO, logger="aiocelerymon.web.audit")
    statuses = []
    try:
        for method, path in http_routes(app):
            answer = await answer_of(app, method, path, credentials)
            assert not refused_by_security(answer), (method, path, answer)
            statuses.append(answer[0])
    finally:
        await worker.aclose()
    assert statuses.count(200) >= 8  # the reads, send-task and revoke at least
    # The control routes wrote their audit line under the principal's name.
    audit = [r.getMessage() for r in caplog.records if r.name == "aiocelerymon.web.audit"]
    name = "olga" if "Basic" in credentials["Authorization"] else "ops-bot"
    assert audit and all(name in line for line in audit)
    assert not any(OPERATOR[1] in line or OPERATOR_TOKEN in line for line in audit)


async def test_read_only_refuses_every_control_route(monitor):
    app = app_for(monitor, security=settings(read_only=True))
    for method, path in http_routes(app):
        answer = await answer_of(app, method, path, bearer(OPERATOR_TOKEN))
        assert refused_by_security(answer) == (method != "GET"), (method, path, answer)
        if method != "GET":
            assert b"read-only mode" in answer[1], (method, path, answer)


async def test_cookie_sessions_need_the_csrf_token_on_every_control_route(monitor):
    app = app_for(monitor)
    transport = httpx2.ASGITransport(app=app, client=("192.0.2.10", 4000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:5555") as http:
        response = await http.post(
            "/login", data={"username": OPERATOR[0], "password": OPERATOR[1]}
        )
        assert response.status_code == 303
        cookie = f"{SESSION_COOKIE}={http.cookies[SESSION_COOKIE]}"
        token = http.cookies[CSRF_COOKIE]
        info = (await http.get("/auth/session")).json()
        assert info["csrf_token"] == token and info["can_control"] is True
    for method, path in http_routes(app):
        if method == "GET":
            continue
        refused = await answer_of(app, method, path, {"Cookie": cookie})
        assert refused[0] == 403 and b"CSRF" in refused[1], (method, path)
        forged = await answer_of(app, method, path, {"Cookie": cookie, "X-CSRF-Token": "x"})
        assert forged[0] == 403 and b"CSRF" in forged[1], (method, path)
        ok = await answer_of(app, method, path, {"Cookie": cookie, "X-CSRF-Token": token})
        assert not refused_by_security(ok), (method, path, ok)


async def test_url_prefix_comes_from_create_app(monitor):
    # The settings know no prefix; create_app tells the middleware its own.
    app = app_for(monitor, url_prefix="/flower")
    assert await status_of(app, "GET", "/flower/healthcheck") == 200
    assert await status_of(app, "GET", "/flower/api/workers") == 401
    assert await status_of(app, "GET", "/flower/api/workers", basic(VIEWER)) == 200
    assert await status_of(app, "GET", "/flower/login") == 200
    routes = http_routes(app)
    assert routes and all(path.startswith("/flower/") for _, path in routes)
    for method, path in routes:
        if path != "/flower/healthcheck":
            assert await status_of(app, method, path) == 401, (method, path)


async def test_metrics_behind_auth_unless_public(monitor):
    async def metrics(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"celery_workers 0\n"})

    # create_app routes /metrics to it; /metrics/ is Starlette's redirect to /metrics.
    app = app_for(monitor, metrics=metrics)
    for path in ("/metrics", "/metrics/"):
        assert await status_of(app, "GET", path) == 401
        assert await status_of(app, "GET", path, basic(VIEWER)) in (200, 307)
    assert await status_of(app, "GET", "/metrics", basic(VIEWER)) == 200
    public = app_for(monitor, metrics=metrics, security=settings(metrics_public=True))
    assert await status_of(public, "GET", "/metrics") == 200
    assert await status_of(public, "GET", "/metrics/") in (200, 307)
    assert await status_of(public, "GET", "/api/workers") == 401


async def test_no_credentials_loopback_is_an_anonymous_operator(monitor):
    app = app_for(monitor, security=SecuritySettings())
    for method, path in http_routes(app):
        answer = await answer_of(app, method, path)
        assert not refused_by_security(answer), (method, path, answer)
    evil = {"Origin": "https://evil.example"}
    for method, path in http_routes(app):
        if method == "POST":
            assert await status_of(app, method, path, evil) == 403, (method, path)
