"""Prometheus metrics compatible with celery-exporter, plus the monitor's own health.

``collector = MetricsCollector(MetricsSettings(...))``, ``collector.attach(monitor)``, then
mount ``metrics_route(collector)`` at ``/metrics`` or run ``aiocelerymon exporter``.
See docs/metrics.md.
"""

from __future__ import annotations

from aiocelerymon.metrics.asgi import ExporterApp, MetricsEndpoint, metrics_route
from aiocelerymon.metrics.collector import (
    DEFAULT_BUCKETS,
    DEFAULT_QUEUE_WAIT_BUCKETS,
    TASK_EVENTS,
    MetricsCollector,
    MetricsSettings,
    QueueSample,
)
from aiocelerymon.metrics.queues import QueuePoller

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_QUEUE_WAIT_BUCKETS",
    "TASK_EVENTS",
    "ExporterApp",
    "MetricsCollector",
    "MetricsEndpoint",
    "MetricsSettings",
    "QueuePoller",
    "QueueSample",
    "metrics_route",
]
