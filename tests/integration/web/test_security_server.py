"""SecurityMiddleware behind a real uvicorn on a real socket: what a test client cannot show.

uvicorn's own proxy-header handling is off (``uvicorn_options()``), a WebSocket refused before
accept is a real 403 handshake, and the headers reach the wire.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx2
import pytest
import uvicorn
import websockets

from aiocelerymon.web.security import (
    CSP,
    PasswordUser,
    Role,
    SecurityMiddleware,
    SecuritySettings,
    uvicorn_options,
)
from tests.support.secure_app import build_app

pytestmark = pytest.mark.integration

USER = ("alice", "alice-password")
VIEWER = ("bob", "bob-password")


async def serve(settings: SecuritySettings) -> AsyncIterator[str]:
    app = SecurityMiddleware(build_app(), settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **uvicorn_options()
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


@pytest.fixture
async def address() -> AsyncIterator[str]:
    settings = SecuritySettings(
        users=[
            PasswordUser.plain(*USER, role=Role.OPERATOR),
            PasswordUser.plain(*VIEWER, role=Role.VIEWER),
        ],
        failure_delay=0.0,
    )
    async for value in serve(settings):
        yield value


async def test_real_server_enforces_auth_and_headers(address):
    async with httpx2.AsyncClient(base_url=f"http://{address}") as client:
        refused = await client.get("/api/workers")
        assert refused.status_code == 401
        assert refused.headers["content-security-policy"] == CSP
        assert refused.headers["x-frame-options"] == "DENY"
        assert "server" not in refused.headers
        ok = await client.get("/api/workers", auth=USER)
        assert ok.status_code == 200 and ok.json()["user"] == "alice"
        assert (await client.post("/api/worker/shutdown/w1", auth=VIEWER)).status_code == 403
        assert (await client.post("/api/worker/shutdown/w1", auth=USER)).status_code == 200


async def test_uvicorn_does_not_trust_forwarded_headers_from_loopback(address):
    # uvicorn alone would believe these from 127.0.0.1; with no --forwarded-allow-ips we don't.
    spoof = {"X-Forwarded-For": "192.0.2.99", "X-Forwarded-Proto": "https"}
    async with httpx2.AsyncClient(base_url=f"http://{address}") as client:
        body = (await client.get("/api/workers", auth=USER, headers=spoof)).json()
    assert body["client"] == "127.0.0.1"
    assert body["scheme"] == "http"
    assert body["forwarded_for"] is None


async def test_real_websocket_handshake_refused_then_accepted(address):
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"ws://{address}/api/events"):
            pass
    assert info.value.response.status_code == 403
    credentials = base64.b64encode(":".join(VIEWER).encode()).decode()
    async with websockets.connect(
        f"ws://{address}/api/events", additional_headers={"Authorization": f"Basic {credentials}"}
    ) as ws:
        assert await ws.recv() == '{"user":"bob"}'
