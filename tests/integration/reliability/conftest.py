"""Dedicated, restartable brokers for the reliability tests (never the shared session ones)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.reliability.servers import RestartableRabbit, restartable_rabbit


@pytest.fixture(scope="session")
def own_rabbit() -> Iterator[RestartableRabbit]:
    """One RabbitMQ for the directory (booting takes ~5 s); tests restart it in place."""
    with restartable_rabbit() as server:
        yield server
