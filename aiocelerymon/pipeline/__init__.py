"""One ingestion pipeline for every app: a Monitor owns the receiver, the State and a hub."""

from __future__ import annotations

from aiocelerymon.pipeline.hub import EventFilter, Filter, Hub, Lagged, Subscriber
from aiocelerymon.pipeline.monitor import Listener, Monitor, MonitorStats

__all__ = [
    "EventFilter",
    "Filter",
    "Hub",
    "Lagged",
    "Listener",
    "Monitor",
    "MonitorStats",
    "Subscriber",
]
