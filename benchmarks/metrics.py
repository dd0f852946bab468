"""Prometheus metrics: CPU per event with metrics on and off, and the scrape at scale.

* **CPU per event**: the stream of ``benchmarks/streams.py`` (received/started/succeeded from 4
  workers) fed the way a receiver hands it on. Ours: our State, then our State plus the
  collector (the pipeline's listener). Theirs: celery-exporter 0.11 (``prometheus-exporter-
  celery``), whose handlers feed Celery's State and then ``prometheus_client`` per event, against
  Celery's State alone. ``time.process_time`` of the feeding loop.
* **Scrape at 500 workers x 200 task types**: one finished task per (worker, task type), so
  100,000 label sets, and a heartbeat per worker; then one scrape. Ours: ``render()``; theirs:
  ``prometheus_client.generate_latest`` of celery-exporter's registry, which is what its
  ``/metrics`` serializes (its scrape also runs two 1 s ``inspect`` broadcasts first, not
  counted here). Also a second scrape with nothing changed since the first.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.streams import received


def _cpu_per_event(feed: Callable[[dict[str, Any]], Any], events: list[dict[str, Any]]) -> float:
    batch = [dict(e) for e in events]
    gc.collect()
    gc.freeze()  # the pre-built input is not what is measured (as benchmarks/state.py)
    try:
        start = time.process_time()
        for ev in batch:
            feed(ev)
        return (time.process_time() - start) / len(batch) * 1e9
    finally:
        gc.unfreeze()


def _ours(metrics: bool) -> Callable[[dict[str, Any]], Any]:
    from aiocelerymon.events.state import State
    from aiocelerymon.metrics import MetricsCollector

    state = State(max_tasks_in_memory=100_000)
    if not metrics:
        return state.event
    collector = MetricsCollector()
    on_event = collector.on_event

    def feed(ev: dict[str, Any]) -> None:
        state.event(ev)
        on_event(ev, state)

    return feed


def _celery_exporter() -> Any:
    """celery-exporter's Exporter with Celery's State, logging as its INFO default."""
    from celery.events.state import State as CeleryState
    from loguru import logger
    from src.exporter import Exporter

    logger.remove()
    logger.add(lambda _: None, level="INFO")
    exporter = Exporter()
    exporter.state = CeleryState(max_tasks_in_memory=100_000)
    return exporter


def _theirs(metrics: bool) -> Callable[[dict[str, Any]], Any]:
    if not metrics:
        from celery.events.state import State as CeleryState

        return CeleryState(max_tasks_in_memory=100_000).event
    return _exporter_feed(_celery_exporter())


def _exporter_feed(exporter: Any) -> Callable[[dict[str, Any]], Any]:
    """celery-exporter's receiver handlers (``Exporter.run``): by event type, others ignored."""
    handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "worker-heartbeat": exporter.track_worker_heartbeat,
        "worker-online": lambda ev: exporter.track_worker_status(ev, True),
        "worker-offline": lambda ev: exporter.track_worker_status(ev, False),
    }
    for kind in exporter.state_counters:
        handlers[kind] = exporter.track_task_event

    def feed(ev: dict[str, Any]) -> None:
        handler = handlers.get(ev["type"])
        if handler is not None:
            handler(ev)

    return feed


def _cluster(workers: int, types: int) -> list[dict[str, Any]]:
    """One finished task per (worker, task type), then a heartbeat from every worker."""
    from aiocelerymon.wire.event import event

    now = time.time()
    out: list[dict[str, Any]] = []
    clock = 0

    def add(type_: str, host: str, **fields: Any) -> None:
        nonlocal clock
        clock += 1
        ev = event(type_, hostname=host, clock=clock, timestamp=now, pid=1, **fields)
        ev["local_received"] = now
        out.append(ev)

    for w in range(workers):
        host = f"celery@worker-{w:03d}.cluster.local"
        for t in range(types):
            task_id = str(uuid.uuid4())
            add("task-received", host, uuid=task_id, name=f"proj.tasks.task_{t:03d}",
                args="()", kwargs="{}", retries=0, eta=None, expires=None)  # fmt: skip
            add("task-started", host, uuid=task_id)
            add("task-succeeded", host, uuid=task_id, result="None", runtime=0.0123)
        add("worker-heartbeat", host, freq=2.0, active=0, processed=types)
    return out


def _timed(fn: Callable[[], bytes]) -> tuple[float, int]:
    gc.collect()
    start = time.perf_counter()
    data = fn()
    return (time.perf_counter() - start) * 1000, len(data)


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    try:
        import src.exporter  # noqa: F401  (celery-exporter's module)
    except ImportError:
        print("benchmarks.metrics: prometheus-exporter-celery is not installed, no metrics rows")
        return []
    from prometheus_client import generate_latest

    rows: list[dict[str, Any]] = []
    tasks = 10_000 if quick else 66_667
    events = received(tasks, sent=False)
    on = {
        "ours": _cpu_per_event(_ours(True), events),
        "theirs": _cpu_per_event(_theirs(True), events),
    }
    off = {
        "ours": _cpu_per_event(_ours(False), events),
        "theirs": _cpu_per_event(_theirs(False), events),
    }
    n = f"{len(events):,} task events"
    rows.append({"name": f"metrics on: State + metrics, CPU per event, {n} (lower is better)",
                 "unit": "ns", **on, "ratio": on["theirs"] / on["ours"]})  # fmt: skip
    rows.append({"name": f"metrics off: State alone, CPU per event, {n} (lower is better)",
                 "unit": "ns", **off, "ratio": off["theirs"] / off["ours"]})  # fmt: skip
    cost = {k: on[k] - off[k] for k in on}
    rows.append({"name": "metrics' own cost per event (on minus off; lower is better)",
                 "unit": "ns", **cost, "ratio": cost["theirs"] / cost["ours"]})  # fmt: skip

    workers, types = (100, 50) if quick else (500, 200)
    cluster = _cluster(workers, types)
    from aiocelerymon.events.state import State
    from aiocelerymon.metrics import MetricsCollector

    state = State(max_tasks_in_memory=workers * types)
    collector = MetricsCollector()
    for ev in cluster:
        state.event(ev)
        collector.on_event(ev, state)
    exporter = _celery_exporter()
    exporter.state.max_tasks_in_memory = workers * types
    theirs_feed = _exporter_feed(exporter)
    for ev in cluster:
        theirs_feed(dict(ev))
    ours_ms, ours_bytes = _timed(collector.render)
    theirs_ms, theirs_bytes = _timed(lambda: generate_latest(exporter.registry))
    again_ms, _ = _timed(collector.render)
    again_theirs_ms, _ = _timed(lambda: generate_latest(exporter.registry))
    scale = f"{workers} workers x {types} task types ({workers * types:,} label sets)"
    rows.append({"name": f"scrape time, {scale} (lower is better)", "unit": "ms",
                 "ours": ours_ms, "theirs": theirs_ms, "ratio": theirs_ms / ours_ms})  # fmt: skip
    rows.append({"name": f"scrape time, nothing changed since the last, {scale} (lower is better)",
                 "unit": "ms", "ours": again_ms, "theirs": again_theirs_ms,
                 "ratio": again_theirs_ms / again_ms})  # fmt: skip
    rows.append({"name": f"scrape size, {scale} (lower is better)", "unit": "MB",
                 "ours": ours_bytes / 1e6, "theirs": theirs_bytes / 1e6,
                 "ratio": theirs_bytes / ours_bytes})  # fmt: skip
    return rows
