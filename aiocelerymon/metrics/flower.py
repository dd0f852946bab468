"""Flower's ``flower_*`` metrics (``--flower-metrics``), for dashboards built on Flower's /metrics.

Same names, types and labels as Flower 2.x (``flower/events.py``): ``worker`` is the full node
name, ``task`` the task name. Series of a host go when the collector purges the host (Flower only
drops them with ``--purge_offline_workers``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiocelerymon.metrics._text import format_value, header, label_value

__all__ = ["FlowerMetrics"]


def _node_host(nodename: str) -> str:
    head, sep, tail = nodename.partition("@")
    return tail if sep else head


class FlowerMetrics:
    """Counts events into Flower's metric families; rendered after the celery-exporter ones."""

    def __init__(
        self, buckets: tuple[float, ...], static: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._buckets = buckets
        self._les = tuple(format_value(b) for b in buckets)
        self._static = static
        self._clock = clock
        #: (worker, type, task) -> [count, created]
        self.events: dict[tuple[str, str, str], list[float]] = {}
        #: (worker, task) -> [bucket counts..., count, sum, created]
        self.runtime: dict[tuple[str, str], list[float]] = {}
        self.prefetch_time: dict[tuple[str, str], float] = {}
        self.prefetched: dict[tuple[str, str], float] = {}
        self.online: dict[str, float] = {}
        self.executing: dict[str, float] = {}
        #: host label -> the node names seen on it (for the purge).
        self._by_host: dict[str, set[str]] = {}

    def _seen(self, worker: str) -> None:
        host = _node_host(worker)
        nodes = self._by_host.get(host)
        if nodes is None:
            self._by_host[host] = {worker}
        elif worker not in nodes:
            nodes.add(worker)

    def on_event(self, event: Mapping[str, Any], state: Any) -> None:
        kind, worker = event.get("type"), event.get("hostname")
        if kind.__class__ is not str or worker.__class__ is not str:
            return
        if kind.startswith("task-"):
            task = state.tasks.data.get(event.get("uuid"))
            if task is None:
                return
            self._seen(worker)
            self._task(worker, kind, event, task)
        elif kind in ("worker-online", "worker-heartbeat", "worker-offline"):
            self._seen(worker)
            self.online[worker] = 0.0 if kind == "worker-offline" else 1.0
            active = event.get("active")
            if kind == "worker-heartbeat" and active is not None:
                with contextlib.suppress(TypeError, ValueError):
                    self.executing[worker] = float(active)

    def _task(self, worker: str, kind: str, event: Mapping[str, Any], task: Any) -> None:
        raw_name = event.get("name") or task.name or ""
        name = raw_name if raw_name.__class__ is str else str(raw_name)
        key = (worker, kind, name)
        child = self.events.get(key)
        if child is None:
            self.events[key] = [1.0, self._clock()]
        else:
            child[0] += 1.0
        runtime = event.get("runtime")
        if runtime and (runtime.__class__ is float or runtime.__class__ is int):
            hist = self.runtime.get((worker, name))
            n = len(self._buckets)
            if hist is None:
                hist = self.runtime[(worker, name)] = [0.0] * (n + 2) + [self._clock()]
            for i, bound in enumerate(self._buckets):
                if runtime <= bound:
                    hist[i] += 1
                    break
            hist[n] += 1
            hist[n + 1] += runtime
        # Flower: prefetch metrics only for tasks received here without an ETA.
        if task.eta or not task.received:
            return
        pair = (worker, name)
        if kind == "task-received":
            self.prefetched[pair] = self.prefetched.get(pair, 0.0) + 1
        elif kind == "task-started" and task.started:
            with contextlib.suppress(TypeError, ValueError):
                self.prefetch_time[pair] = float(task.started - task.received)
            self.prefetched[pair] = self.prefetched.get(pair, 0.0) - 1
        elif kind in ("task-succeeded", "task-failed") and task.started:
            self.prefetch_time[pair] = 0.0
        elif kind in ("task-revoked", "task-rejected") and not task.started:
            self.prefetched[pair] = self.prefetched.get(pair, 0.0) - 1

    def forget(self, host: str) -> None:
        """Drop every series of the node names seen on ``host`` (a purged host label)."""
        nodes = self._by_host.pop(host, None)
        if not nodes:
            return
        tables: tuple[dict[Any, Any], ...] = (
            self.events,
            self.runtime,
            self.prefetch_time,
            self.prefetched,
        )
        for table in tables:
            for key in [k for k in table if k[0] in nodes]:
                del table[key]
        for worker in nodes:
            self.online.pop(worker, None)
            self.executing.pop(worker, None)

    def render(self, out: list[str]) -> None:
        static = self._static
        v = label_value
        out.append(
            header("flower_events_total", "counter", "Task events, by worker, type and task.")
        )
        out.extend(
            f'flower_events_total{{worker="{v(w)}",type="{v(t)}",task="{v(n)}"{static}}} {c[0]!r}\n'
            for (w, t, n), c in self.events.items()
        )
        if self.events:
            out.append(
                header("flower_events_created", "gauge", "Task events, by worker, type and task.")
            )
            out.extend(
                f'flower_events_created{{worker="{v(w)}",type="{v(t)}",task="{v(n)}"{static}}} '
                f"{format_value(c[1])}\n"
                for (w, t, n), c in self.events.items()
            )
        out.append(header("flower_task_runtime_seconds", "histogram", "Task runtime in seconds."))
        n = len(self._buckets)
        for (w, task), hist in self.runtime.items():
            labels = f'worker="{v(w)}",task="{v(task)}"{static}'
            cumulative = 0.0
            for le, count in zip(self._les, hist, strict=False):
                cumulative += count
                out.append(
                    f'flower_task_runtime_seconds_bucket{{{labels},le="{le}"}} {cumulative!r}\n'
                )
            out.append(f"flower_task_runtime_seconds_count{{{labels}}} {hist[n]!r}\n")
            out.append(f"flower_task_runtime_seconds_sum{{{labels}}} {format_value(hist[n + 1])}\n")
        if self.runtime:
            out.append(
                header("flower_task_runtime_seconds_created", "gauge", "Task runtime in seconds.")
            )
            out.extend(
                f'flower_task_runtime_seconds_created{{worker="{v(w)}",task="{v(t)}"{static}}} '
                f"{format_value(h[n + 2])}\n"
                for (w, t), h in self.runtime.items()
            )
        for name, text, table in (
            (
                "flower_task_prefetch_time_seconds",
                "Seconds the last task waited at the worker between received and started.",
                self.prefetch_time,
            ),
            (
                "flower_worker_prefetched_tasks",
                "Tasks received by the worker and not started yet.",
                self.prefetched,
            ),
        ):
            out.append(header(name, "gauge", text))
            out.extend(
                f'{name}{{worker="{v(w)}",task="{v(t)}"{static}}} {format_value(value)}\n'
                for (w, t), value in table.items()
            )
        for name, text, gauges in (
            ("flower_worker_online", "1 while the worker is online.", self.online),
            (
                "flower_worker_number_of_currently_executing_tasks",
                "Tasks the worker is executing (from its heartbeat).",
                self.executing,
            ),
        ):
            out.append(header(name, "gauge", text))
            out.extend(
                f'{name}{{worker="{v(w)}"{static}}} {format_value(value)}\n'
                for w, value in gauges.items()
            )
