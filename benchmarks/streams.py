"""The task event stream every benchmark feeds: one definition, so the rows compare like inputs.

Task ids come from a seeded generator, so two builds of a stream (ours and Celery's side, in
different processes) carry the same ids; only the timestamps are taken when a stream is built,
because Celery's State warns on every event whose timestamp drifts over 16 s from arrival.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aiocelerymon.wire.event import event

WORKERS = 4


def task_events(tasks: int, *, sent: bool, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(routing_key, event)`` per event, task by task, as workers (and a client) send them:
    task-sent (when ``sent``), received, started, succeeded, from ``WORKERS`` workers."""
    rng = random.Random(seed)
    now = time.time()
    clock = 0
    for i in range(tasks):
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        host = f"celery@worker{i % WORKERS}"
        pid = 1000 + i % WORKERS
        kinds: list[tuple[str, str, dict[str, Any]]] = []
        if sent:
            kinds.append(("task-sent", "client@bench", {
                "uuid": task_id, "root_id": task_id, "parent_id": None, "name": "proj.tasks.add",
                "args": "(2, 2)", "kwargs": "{}", "retries": 0, "eta": None, "expires": None,
                "queue": "celery", "exchange": "", "routing_key": "celery"}))  # fmt: skip
        kinds += [
            ("task-received", host, {
                "uuid": task_id, "name": "proj.tasks.add", "args": "(2, 2)", "kwargs": "{}",
                "root_id": task_id, "parent_id": None, "retries": 0, "eta": None,
                "expires": None}),
            ("task-started", host, {"uuid": task_id}),
            ("task-succeeded", host, {"uuid": task_id, "result": "4", "runtime": 0.0012}),
        ]  # fmt: skip
        for type_, hostname, fields in kinds:
            clock += 1
            rk = type_.replace("-", ".")
            yield rk, event(type_, hostname=hostname, clock=clock, pid=pid,
                            timestamp=now + clock * 1e-5, **fields)  # fmt: skip


def received(tasks: int, *, sent: bool) -> list[dict[str, Any]]:
    """The same stream as a receiver hands it to State (with ``local_received``)."""
    return [{**ev, "local_received": ev["timestamp"]} for _, ev in task_events(tasks, sent=sent)]
