"""What the page's charts and highlights read: per-second counters, runtimes, running tasks.

One :class:`PageSeries` is a Monitor listener (``fn(event, state)``, on the ingestion path), so
it must stay cheap: a dictionary increment per task event, a bounded deque append per
success. It keeps, for the last ``horizon`` seconds:

* succeeded / failed / retried per second, for the cluster, per worker and per task type
  (Flower 2.2 draws none of these; it points to Prometheus);
* the last ``runtime_samples`` runtimes of every task type, for percentiles;
* the tasks now running (``task-started`` and no end yet), for the stuck-task highlight;
* per-worker event counters (Flower's dashboard columns: processed, failed, succeeded, retried);
* queue depths over time, sampled by :meth:`sample_queues` (driven by the page route).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["KINDS", "PageSeries", "percentile"]

#: The outcomes charted, as the event types name them.
KINDS = ("succeeded", "failed", "retried")
_KIND_OF = {f"task-{kind}": kind for kind in KINDS}
#: Events that end a running task.
_ENDS = frozenset({"task-succeeded", "task-failed", "task-retried", "task-revoked",
                   "task-rejected"})  # fmt: skip
#: Worker counters shown on the dashboard (Flower's ``state.counter[hostname][type]``).
_COUNTED = frozenset({"task-received", "task-started", *_KIND_OF})
#: A running task is stuck when it has run longer than FACTOR times its type's p95 runtime,
#: and at least MIN_EXCESS seconds longer, once MIN_SAMPLES runs of that type finished.
STUCK_FACTOR = 3.0
STUCK_MIN_EXCESS = 2.0
STUCK_MIN_SAMPLES = 3


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ascending values, linearly interpolated (numpy's default)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class PageSeries:
    """Counters for the charts, kept by a Monitor listener."""

    def __init__(
        self,
        *,
        horizon: int = 600,
        runtime_samples: int = 1000,
        max_running: int = 100_000,
        max_keys: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if horizon < 10:
            raise ValueError(f"horizon must be at least 10 seconds, not {horizon!r}")
        self.horizon = horizon
        self.runtime_samples = runtime_samples
        self.max_running = max_running
        #: At most this many workers and task types are charted (the busiest first).
        self.max_keys = max_keys
        self.clock = clock
        #: ``(second, {(scope, key, kind): count})``, oldest first; scope is "c", "w" or "t".
        self._buckets: deque[tuple[int, dict[tuple[str, str, str], int]]] = deque()
        self._runtimes: dict[str, deque[float]] = {}
        #: uuid -> (name, worker, started timestamp), insertion ordered (oldest first).
        self.running: dict[str, tuple[str, str, float]] = {}
        self.counters: dict[str, dict[str, int]] = {}
        self._queues: deque[tuple[float, dict[str, int]]] = deque(maxlen=horizon)
        self.last_queue_sample = 0.0

    # -- the listener --------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any], state: Any) -> None:
        kind = event.get("type")
        if not isinstance(kind, str) or not kind.startswith("task-"):
            return
        worker = str(event.get("hostname") or "")
        if kind in _COUNTED and worker:
            counts = self.counters.setdefault(worker, {})
            counts[kind] = counts.get(kind, 0) + 1
        uuid = event.get("uuid")
        if not isinstance(uuid, str):
            return
        if kind == "task-started":
            task = state.tasks.data.get(uuid)
            name = str(getattr(task, "name", None) or "")
            started = _number(event.get("timestamp")) or self.clock()
            self.running.pop(uuid, None)
            self.running[uuid] = (name, worker, started)
            while len(self.running) > self.max_running:
                del self.running[next(iter(self.running))]
            return
        if kind in _ENDS:
            self.running.pop(uuid, None)
        outcome = _KIND_OF.get(kind)
        if outcome is None:
            return
        task = state.tasks.data.get(uuid)
        name = str(getattr(task, "name", None) or "unknown")
        second = int(_number(event.get("timestamp")) or self.clock())
        bucket = self._bucket(second)
        for key in (("c", "", outcome), ("w", worker, outcome), ("t", name, outcome)):
            bucket[key] = bucket.get(key, 0) + 1
        if outcome == "succeeded":
            runtime = _number(event.get("runtime"))
            if runtime is not None and runtime >= 0:
                samples = self._runtimes.get(name)
                if samples is None:
                    samples = self._runtimes[name] = deque(maxlen=self.runtime_samples)
                samples.append(runtime)

    def _bucket(self, second: int) -> dict[tuple[str, str, str], int]:
        buckets = self._buckets
        if buckets and buckets[-1][0] == second:
            return buckets[-1][1]
        if not buckets or second > buckets[-1][0]:
            buckets.append((second, {}))
            while buckets and buckets[0][0] <= second - self.horizon:
                buckets.popleft()
            return buckets[-1][1]
        for at, counts in reversed(buckets):  # a late event: its own second, if still kept
            if at == second:
                return counts
            if at < second:
                break
        return {}  # older than every bucket kept, or a gap: counted nowhere

    # -- queue depth ---------------------------------------------------------------------------

    def add_queue_sample(self, depths: dict[str, int], at: float | None = None) -> None:
        at = self.clock() if at is None else at
        self._queues.append((at, dict(depths)))
        self.last_queue_sample = at

    # -- what the routes read ------------------------------------------------------------------

    def rates(self, window: int | None = None, now: float | None = None) -> dict[str, Any]:
        """Counts per second over the last ``window`` seconds, for uPlot (x, then y arrays)."""
        window = min(window or self.horizon, self.horizon)
        end = int(self.clock() if now is None else now)
        start = end - window + 1
        index = {second: counts for second, counts in self._buckets if second >= start}
        totals: dict[tuple[str, str], int] = {}
        for counts in index.values():
            for (scope, key, _), n in counts.items():
                if scope != "c":
                    totals[scope, key] = totals.get((scope, key), 0) + n
        seconds = list(range(start, end + 1))

        def series(scope: str, key: str) -> dict[str, list[int]]:
            return {
                kind: [index.get(s, {}).get((scope, key, kind), 0) for s in seconds]
                for kind in KINDS
            }

        def busiest(scope: str) -> list[str]:
            keys = [k for (s, k) in totals if s == scope]
            keys.sort(key=lambda k: (-totals[scope, k], k))
            return keys[: self.max_keys]

        return {
            "t": seconds,
            "cluster": series("c", ""),
            "workers": {w: series("w", w) for w in busiest("w")},
            "tasks": {t: series("t", t) for t in busiest("t")},
        }

    def runtimes(self) -> dict[str, dict[str, float]]:
        """Per task type: count, p50, p90, p95, p99 and max of the kept runtimes (seconds)."""
        out: dict[str, dict[str, float]] = {}
        for name, samples in sorted(self._runtimes.items()):
            if not samples:
                continue
            values = sorted(samples)
            out[name] = {
                "count": len(values),
                "p50": percentile(values, 0.5),
                "p90": percentile(values, 0.9),
                "p95": percentile(values, 0.95),
                "p99": percentile(values, 0.99),
                "max": values[-1],
            }
        return out

    def queues(self) -> dict[str, Any]:
        """``{"t": [...], "queues": {name: [messages or None, ...]}}``."""
        names = sorted({name for _, depths in self._queues for name in depths})
        return {
            "t": [at for at, _ in self._queues],
            "queues": {n: [depths.get(n) for _, depths in self._queues] for n in names},
        }

    def stuck(self, now: float | None = None) -> list[dict[str, Any]]:
        """Running tasks far beyond their type's usual runtime, longest first."""
        now = self.clock() if now is None else now
        usual: dict[str, float | None] = {}
        found: list[dict[str, Any]] = []
        for uuid, (name, worker, started) in self.running.items():
            if name not in usual:
                samples = self._runtimes.get(name)
                usual[name] = (
                    percentile(sorted(samples), 0.95)
                    if samples and len(samples) >= STUCK_MIN_SAMPLES
                    else None
                )
            p95 = usual[name]
            if p95 is None:
                continue
            elapsed = now - started
            if elapsed > max(STUCK_FACTOR * p95, p95 + STUCK_MIN_EXCESS):
                found.append({"uuid": uuid, "name": name, "worker": worker,
                              "started": started, "elapsed": elapsed, "usual": p95})  # fmt: skip
        found.sort(key=lambda row: -float(row["elapsed"]))
        return found

    def stuck_ids(self, now: float | None = None) -> set[str]:
        return {str(row["uuid"]) for row in self.stuck(now)}

    def forget_workers(self, names: Iterable[str]) -> None:
        for name in names:
            self.counters.pop(name, None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
