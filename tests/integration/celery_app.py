"""The Celery app that integration tests run real workers and CLI commands with.

Configured entirely from the JSON in ``AIOCELERYMON_TEST_CELERY_CONFIG`` (Celery setting names as
keys, e.g. ``broker_url``, ``control_exchange``, ``broker_transport_options``,
``control_queue_exclusive``, ``worker_send_task_events``, ``task_send_sent_event``), so a test can
vary the wire-relevant settings without writing a module per variant.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery

from tests.support.celery_worker import CONFIG_ENV


def _config() -> dict[str, Any]:
    raw = os.environ.get(CONFIG_ENV, "")
    config: dict[str, Any] = json.loads(raw) if raw else {}
    # Silences Celery's startup deprecation warning; a test may still override it.
    config.setdefault("broker_connection_retry_on_startup", True)
    return config


app = Celery("aiocelerymon_tests")
app.conf.update(_config())


@app.task
def add(x: int, y: int) -> int:
    """Return ``x + y``."""
    return x + y


@app.task
def fail() -> None:
    """Always raise, for task-failed events."""
    raise RuntimeError("fail() always fails")


@app.task
def sleep(seconds: float) -> float:
    """Sleep, so a task can be seen as active; returns the seconds slept."""
    time.sleep(seconds)
    return seconds


@app.task(bind=True, max_retries=3, default_retry_delay=0)
def retry_once(self: Any) -> str:
    """Fail the first attempt with a retry, then succeed: task-retried then task-succeeded."""
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError("first attempt"), countdown=0)
    return "retried"


@app.task(bind=True)
def progress(self: Any, steps: int = 2) -> int:
    """Send custom task-progress events (a custom state, PROGRESS, in State)."""
    for step in range(steps):
        self.send_event("task-progress", current=step + 1, total=steps)
    return steps
