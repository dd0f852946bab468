"""aiocelerymon: async-native monitoring and control for Celery clusters."""

from __future__ import annotations

from aiocelerymon._url import BrokerURL, parse_url
from aiocelerymon._version import __version__
from aiocelerymon.client import Client
from aiocelerymon.control import Node
from aiocelerymon.events import State
from aiocelerymon.exceptions import (
    AiocelerymonError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    TransportError,
)
from aiocelerymon.transports import RetryPolicy, Transport, create_transport

__all__ = [
    "AiocelerymonError",
    "BrokerURL",
    "Client",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLostError",
    "Node",
    "RetryPolicy",
    "State",
    "Transport",
    "TransportError",
    "__version__",
    "create_transport",
    "parse_url",
]
