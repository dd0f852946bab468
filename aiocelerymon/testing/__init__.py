"""Testing against real brokers and Celery workers: the pytest plugin and its helpers.

``pip install aiocelerymon[testing]``; the fixtures are in :mod:`aiocelerymon.testing.plugin`
(loaded by pytest automatically), the helpers below work with or without them.
"""

from __future__ import annotations

from aiocelerymon.testing.brokers import BrokerNamespace, RabbitServer, RedisServer
from aiocelerymon.testing.helpers import (
    DEFAULT_TIMEOUT,
    EventLog,
    FakeWorker,
    WaitTimeoutError,
    collect_events,
    wait_for_task_state,
    wait_for_workers,
)
from aiocelerymon.testing.worker import CeleryWorker, CeleryWorkerError, start_celery_worker

__all__ = [
    "DEFAULT_TIMEOUT",
    "BrokerNamespace",
    "CeleryWorker",
    "CeleryWorkerError",
    "EventLog",
    "FakeWorker",
    "RabbitServer",
    "RedisServer",
    "WaitTimeoutError",
    "collect_events",
    "start_celery_worker",
    "wait_for_task_state",
    "wait_for_workers",
]
