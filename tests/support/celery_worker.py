"""A real Celery worker of the project's test app (``tests.integration.celery_app``).

The process handling is :mod:`aiocelerymon.testing.worker`; this module only adds the test app
and its configuration, passed as JSON in ``AIOCELERYMON_TEST_CELERY_CONFIG`` (Celery setting
names as keys), so a test can vary the wire-relevant settings without a module per variant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiocelerymon.testing import worker as _impl
from aiocelerymon.testing.worker import (
    CELERY_ENV,
    STOP_TIMEOUT,
    CeleryWorker,
    CeleryWorkerError,
    start_celery_worker,
)

__all__ = [
    "APP_MODULE",
    "CONFIG_ENV",
    "REPO_ROOT",
    "STOP_TIMEOUT",
    "CeleryWorker",
    "CeleryWorkerError",
    "celery_env",
    "celery_worker",
]

CONFIG_ENV = "AIOCELERYMON_TEST_CELERY_CONFIG"
APP_MODULE = "tests.integration.celery_app"
REPO_ROOT = Path(__file__).resolve().parents[2]


def celery_env(config: dict[str, Any], *, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for any ``celery -A tests.integration.celery_app`` subprocess (worker or CLI)."""
    env = dict(os.environ if base is None else base)
    for name in CELERY_ENV:
        env.pop(name, None)
    env[CONFIG_ENV] = json.dumps(config)
    # `-A tests.integration.celery_app` must import from this checkout whatever the cwd.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def celery_worker(
    broker_url: str,
    hostname: str,
    *,
    concurrency: int = 1,
    events: bool = True,
    config: dict[str, Any] | None = None,
    pool: str = "prefork",
    timeout: float = 60,
    python: str | None = None,
) -> Iterator[CeleryWorker]:
    """Start a worker of the test app and yield once it logged ``<hostname> ready.``.

    ``config`` holds Celery setting names (``control_exchange``, ``broker_transport_options``,
    ...); ``broker_url`` overrides any value in it. ``python`` selects another interpreter
    (e.g. a venv with a different Celery); default: this one.
    """
    env = celery_env({**(config or {}), "broker_url": broker_url})
    with start_celery_worker(
        APP_MODULE,
        hostname,
        concurrency=concurrency,
        events=events,
        pool=pool,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
        python=python,
    ) as worker:
        yield worker


def __getattr__(name: str) -> Any:
    # Any other name of the runner (e.g. ``stop_worker``), read through from the one implementation.
    return getattr(_impl, name)
