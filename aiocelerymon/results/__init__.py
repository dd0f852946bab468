"""Task results as Celery's result backends store them: read async, JSON only.

``client.results.get(task_id)`` returns a :class:`TaskResult` from the app's ``result_backend``:
the Redis backend (``celery-task-meta-<id>`` keys, ``result_backend_transport_options`` with its
``global_keyprefix``) or the database backend (``db+sqlite://``, ``db+postgresql://``; tables
``celery_taskmeta``/``celery_tasksetmeta`` or ``database_table_names``). Each backend's driver
lives in its adapter module (:mod:`.redis`, :mod:`.database`), loaded on first use. Pickled
results are refused (:class:`PickledResultError`), never unpickled.
"""

from __future__ import annotations

from aiocelerymon.results._base import (
    READY_STATES,
    ResultBackend,
    ResultBackendError,
    Results,
    ResultSettings,
    TaskResult,
    decode_json,
    open_backend,
)
from aiocelerymon.results._base import PickledResultError as PickledResultError

__all__ = [
    "READY_STATES",
    "PickledResultError",
    "ResultBackend",
    "ResultBackendError",
    "ResultSettings",
    "Results",
    "TaskResult",
    "decode_json",
    "open_backend",
]
