"""Shared fixtures: real brokers, started lazily once per session when a test asks for one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import brokers

# Tests that use these fixtures get the broker's markers, so `-m "not amqp"` and
# `-m "not integration"` deselect them without every test repeating the marks.
_FIXTURE_MARKERS = {
    "redis_server": ("integration", "redis"),
    "redis_url": ("integration", "redis"),
    "rabbit_server": ("integration", "amqp"),
    "amqp_url": ("integration", "amqp"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Add broker markers to tests that request a broker fixture."""
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for marker in _FIXTURE_MARKERS.get(fixture, ()):
                # Only registered names: --strict-markers would reject the others.
                if marker in registered and item.get_closest_marker(marker) is None:
                    item.add_marker(marker)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[brokers.RedisServer]:
    """A Redis server for the whole session (skipped locally / failed in CI if none)."""
    with brokers.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[brokers.RabbitServer]:
    """A RabbitMQ server for the whole session (skipped locally / failed in CI if none)."""
    with brokers.rabbit_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: brokers.RedisServer) -> str:
    """Base URL (db 0) of the session's Redis server."""
    return redis_server.url


@pytest.fixture
def amqp_url(rabbit_server: brokers.RabbitServer) -> str:
    """Base URL (vhost ``/``) of the session's RabbitMQ server."""
    return rabbit_server.url
