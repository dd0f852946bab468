"""State alone: the same event stream into Celery's State and ours; memory per retained task."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from benchmarks.streams import received


def _rate(make: Callable[[], Any], events: list[dict[str, Any]]) -> float:
    state = make()
    feed = state.event
    batch = [dict(e) for e in events]  # State adds keys to the dicts, so each run gets copies
    gc.collect()
    # The pre-built input is not part of what is measured: a receiver hands events over one at
    # a time. Frozen, its 200k dicts are not traversed by every full collection (both sides).
    gc.freeze()
    try:
        start = time.process_time()
        for ev in batch:
            feed(ev)
        return len(batch) / (time.process_time() - start)
    finally:
        gc.unfreeze()


def _bytes_per_task(make: Callable[[], Any], events: list[dict[str, Any]], tasks: int) -> float:
    """tracemalloc growth per retained task; ``events`` may hold more tasks than are kept."""
    batch = [dict(e) for e in events]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    state = make()
    for ev in batch:
        state.event(ev)
    del batch
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(state.tasks) == tasks
    return grown / tasks


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    from celery.events.state import State as CeleryState

    from aiocelerymon.events.state import State

    rows: list[dict[str, Any]] = []
    tasks = 10_000 if quick else 66_667
    events = received(tasks, sent=False)
    ours_at: dict[int, float] = {}
    for limit in (10_000, 100_000):
        ours_at[limit] = _rate(lambda lim=limit: State(max_tasks_in_memory=lim), events)
        rows.append(
            {
                "name": f"State, {len(events):,} task events, max_tasks {limit:,}",
                "unit": "events/s",
                "ours": ours_at[limit],
                "theirs": _rate(lambda lim=limit: CeleryState(max_tasks_in_memory=lim), events),
            }
        )
    try:
        from flower.events import EventsState  # Flower's State: counters and Prometheus metrics
    except ImportError:
        print("benchmarks.state: flower is not installed, no Flower row")
    else:
        rows.append(
            {
                "name": f"Flower's EventsState (theirs), {len(events):,} task events, "
                "max_tasks 100,000",
                "unit": "events/s",
                "ours": ours_at[100_000],
                "theirs": _rate(lambda: EventsState(max_tasks_in_memory=100_000), events),
            }
        )
    # The singles stream of benchmarks/ingest.py (task-sent on), as the receiver hands it on.
    singles = received(tasks * 3 // 4, sent=True)
    rows.append(
        {
            "name": f"State, {len(singles):,} events with task-sent, max_tasks 100,000",
            "unit": "events/s",
            "ours": _rate(lambda: State(max_tasks_in_memory=100_000), singles),
            "theirs": _rate(lambda: CeleryState(max_tasks_in_memory=100_000), singles),
        }
    )
    retained = 5_000 if quick else 20_000
    small = received(retained, sent=False)
    ours = _bytes_per_task(lambda: State(max_tasks_in_memory=retained), small, retained)
    theirs = _bytes_per_task(lambda: CeleryState(max_tasks_in_memory=retained), small, retained)
    # Lower is better here: the ratio column shows how many times less memory we use.
    rows.append(
        {"name": "bytes per retained finished task (lower is better)", "unit": "B",
         "ours": ours, "theirs": theirs, "ratio": theirs / ours}
    )  # fmt: skip
    # Steady state: twice as many tasks as max_tasks, so the LRU is full and evicting.
    double = received(2 * retained, sent=False)
    ours = _bytes_per_task(lambda: State(max_tasks_in_memory=retained), double, retained)
    theirs = _bytes_per_task(lambda: CeleryState(max_tasks_in_memory=retained), double, retained)
    rows.append(
        {"name": "bytes per retained finished task, LRU full (lower is better)", "unit": "B",
         "ours": ours, "theirs": theirs, "ratio": theirs / ours}
    )  # fmt: skip
    return rows
