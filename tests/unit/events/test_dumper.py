"""The dumper against Celery's own (celery.events.dumper), line for line and hook for hook."""

from __future__ import annotations

import io
from typing import Any

from celery.events import dumper as celery_dumper

from aiocelerymon.events import Dumper

T0 = 1_800_000_000.25
EVENTS: list[dict[str, Any]] = [
    {"type": "worker-online", "hostname": "w1@h", "timestamp": T0, "freq": 2.0, "pid": 7},
    {
        "type": "task-received", "hostname": "w1@h", "timestamp": T0 + 1, "uuid": "u1",
        "name": "proj.add", "args": "(2, 3)", "kwargs": "{}", "retries": 0, "eta": None,
    },
    {"type": "task-started", "hostname": "w1@h", "timestamp": T0 + 2, "uuid": "u1", "pid": 9},
    {"type": "task-succeeded", "hostname": "w1@h", "timestamp": T0 + 3, "uuid": "u1",
     "result": "5", "runtime": 0.5},
    {"type": "task-failed", "hostname": "w1@h", "timestamp": T0 + 4, "uuid": "unknown"},
    {"type": "worker-offline", "hostname": "w1@h", "timestamp": T0 + 5},
]  # fmt: skip


class Recording:
    """A subclass hook, applied to either dumper class."""

    calls: list[tuple[Any, ...]]

    def format_task_event(self, hostname: Any, timestamp: Any, type: Any, task: Any, event: Any):
        self.calls.append((hostname, timestamp, type, task, dict(event)))
        self.say(f"TASK {type} {task}")  # type: ignore[attr-defined]


def run(cls: type) -> tuple[str, list[tuple[Any, ...]]]:
    out = io.StringIO()
    dumper = type("Rec", (Recording, cls), {})(out=out)
    dumper.calls = []
    for event in EVENTS:
        dumper.on_event(dict(event))
    return out.getvalue(), dumper.calls


def test_lines_are_celerys() -> None:
    ours, celery = io.StringIO(), io.StringIO()
    mine, theirs = Dumper(ours), celery_dumper.Dumper(out=celery)
    for event in EVENTS:
        mine.on_event(dict(event))
        theirs.on_event(dict(event))
    assert ours.getvalue() == celery.getvalue()
    assert "task started: proj.add(u1) args=(2, 3) kwargs={} pid=9" in ours.getvalue()


def test_format_task_event_is_celerys_hook() -> None:
    celery_dumper.TASK_NAMES.clear()
    assert run(Dumper) == run(celery_dumper.Dumper)
    out, calls = run(Dumper)
    assert [c[2] for c in calls] == [
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
    ]
    assert calls[1][3] == "proj.add(u1) args=(2, 3) kwargs={}" and calls[3][3] == ""
    assert "TASK task-started proj.add(u1)" in out and "] started: freq=2.0, pid=7" in out


def test_format_task_event_writes_the_line() -> None:
    out = io.StringIO()
    Dumper(out).format_task_event("w1@h", "2027-01-15", "task-started", "t(u)", {"pid": 1})
    assert out.getvalue() == "w1@h [2027-01-15] task started: t(u) pid=1\n"
