"""Testing against real brokers and Celery workers: the pytest plugin and its helpers.

``pip install aiocelerymon[testing]``; the fixtures are in :mod:`aiocelerymon.testing.plugin`
(loaded by pytest automatically), the helpers below work with or without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Imported on first use, like the top-level package: the plugin is loaded by every pytest run.
_LAZY = {
    "DEFAULT_TIMEOUT": "aiocelerymon.testing.helpers",
    "BrokerNamespace": "aiocelerymon.testing.brokers",
    "CeleryWorker": "aiocelerymon.testing.worker",
    "CeleryWorkerError": "aiocelerymon.testing.worker",
    "EventLog": "aiocelerymon.testing.helpers",
    "FakeWorker": "aiocelerymon.testing.helpers",
    "RabbitServer": "aiocelerymon.testing.brokers",
    "RedisServer": "aiocelerymon.testing.brokers",
    "WaitTimeoutError": "aiocelerymon.testing.helpers",
    "collect_events": "aiocelerymon.testing.helpers",
    "start_celery_worker": "aiocelerymon.testing.worker",
    "wait_for_task_state": "aiocelerymon.testing.helpers",
    "wait_for_workers": "aiocelerymon.testing.helpers",
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
