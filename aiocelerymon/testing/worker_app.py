"""``celery -A aiocelerymon.testing.worker_app worker``: your app, with settings laid over it.

:func:`aiocelerymon.testing.start_celery_worker` starts a worker through this module when it
is given ``config``: the app named by ``AIOCELERYMON_WORKER_APP`` (anything ``celery -A``
accepts) is loaded as Celery loads it, then the Celery settings in ``AIOCELERYMON_WORKER_CONFIG``
(a JSON object) are applied over its own, dictionaries merged key by key. That is how a test's
isolation (a ``global_keyprefix`` in ``broker_transport_options``) reaches a worker whose app
reads its broker from the environment: Celery reads only ``CELERY_BROKER_URL`` from there.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

APP_ENV = "AIOCELERYMON_WORKER_APP"
CONFIG_ENV = "AIOCELERYMON_WORKER_CONFIG"


def overlay(app: Any, config: dict[str, Any]) -> None:
    """Apply ``config`` over ``app.conf``; a dict setting is merged into the app's own."""
    changes: dict[str, Any] = {}
    for key, value in config.items():
        current = app.conf.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            value = {**current, **value}
        changes[key] = value
    app.conf.update(changes)


def load() -> Any:
    """The app named by ``AIOCELERYMON_WORKER_APP`` with ``AIOCELERYMON_WORKER_CONFIG`` applied."""
    # Celery is the user's dependency, not ours: imported by name, as ``celery -A`` would.
    find_app = importlib.import_module("celery.app.utils").find_app
    name = os.environ.get(APP_ENV)
    if not name:
        raise RuntimeError(f"{APP_ENV} must name the Celery app (as for celery -A)")
    loaded = find_app(name)
    overlay(loaded, json.loads(os.environ.get(CONFIG_ENV) or "{}"))
    return loaded


def __getattr__(name: str) -> Any:
    # ``app`` on first access (what ``celery -A`` reads), so importing the constants is free.
    if name == "app":
        globals()["app"] = loaded = load()
        return loaded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
