"""A tiny Starlette app behind SecurityMiddleware, a fake clock and a recording sleep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from aiocelerymon.web.security import SecurityMiddleware, SecuritySettings
from tests.support.secure_app import build_app


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
