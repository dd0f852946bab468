"""aiocelerymon: async-native monitoring and control for Celery clusters."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aiocelerymon._version import __version__

if TYPE_CHECKING:
    from aiocelerymon._url import BrokerURL, parse_url
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

# Imported on first use: the pytest plugin (loaded wherever aiocelerymon is installed) imports
# this package, and every pytest run would otherwise pay for the client, protocol and
# transports (about 0.5 s on a small machine) whether or not a test uses them.
_LAZY = {
    "AiocelerymonError": "aiocelerymon.exceptions",
    "BrokerURL": "aiocelerymon._url",
    "Client": "aiocelerymon.client",
    "ConfigurationError": "aiocelerymon.exceptions",
    "ConnectError": "aiocelerymon.exceptions",
    "ConnectionLostError": "aiocelerymon.exceptions",
    "Node": "aiocelerymon.control",
    "RetryPolicy": "aiocelerymon.transports",
    "State": "aiocelerymon.events",
    "Transport": "aiocelerymon.transports",
    "TransportError": "aiocelerymon.exceptions",
    "create_transport": "aiocelerymon.transports",
    "parse_url": "aiocelerymon._url",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
