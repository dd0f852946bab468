"""The project's tests' name for :mod:`aiocelerymon.testing.brokers` (one implementation)."""

from __future__ import annotations

from typing import Any

from aiocelerymon.testing import brokers as _impl
from aiocelerymon.testing.brokers import (
    AMQP_URL_ENV,
    INSTALL_HINT,
    REDIS_URL_ENV,
    REQUIRE_ENV,
    BrokerNamespace,
    BrokerUnavailableError,
    RabbitServer,
    RedisServer,
    brokers_required,
    free_port,
    rabbit_server,
    redis_server,
    stop_process_group,
    unavailable,
)

__all__ = [
    "AMQP_URL_ENV",
    "INSTALL_HINT",
    "REDIS_URL_ENV",
    "REQUIRE_ENV",
    "BrokerNamespace",
    "BrokerUnavailableError",
    "RabbitServer",
    "RedisServer",
    "brokers_required",
    "free_port",
    "rabbit_server",
    "redis_server",
    "stop_process_group",
    "unavailable",
]


def __getattr__(name: str) -> Any:
    # Every other name too (timeouts, the start-up helpers other test modules reuse): one
    # implementation, read through here.
    return getattr(_impl, name)
