"""celery-exporter's metrics from the event stream, bounded, plus the monitor's own health.

:class:`MetricsCollector` is a pipeline listener (``monitor.add_listener(collector.on_event)``):
it reads each event after the State applied it and keeps counters per label set. Names, types,
label names and label values are celery-exporter's (``prometheus-exporter-celery``), so its
Grafana dashboards and alert rules work unchanged:

* ``celery_task_{sent,received,started,succeeded,failed,rejected,revoked,retried}_total``
  (``name``, ``hostname``, ``queue_name``; ``exception`` on ``failed``), each with its
  ``_created`` gauge as ``prometheus_client`` writes it;
* histograms ``celery_task_runtime`` and ``celery_task_queue_wait_time`` (celery-exporter 0.12);
* gauges ``celery_worker_up``, ``celery_worker_tasks_active`` (``hostname``) and, from the queue
  poller, ``celery_queue_length``, ``celery_active_consumer_count`` (AMQP only),
  ``celery_active_worker_count``, ``celery_active_process_count`` (``queue_name``).

What celery-exporter does and this keeps: ``hostname`` is the part of the node name after
``@``; the task's labels come from the State (so ``name`` of a ``task-succeeded`` is the one
``task-received`` gave, and ``queue_name`` is ``task-sent``'s queue or the default queue); a
task event other than ``task-sent`` creates the other seven counters of its label set at 0, so a
short-lived worker's first task is seen by ``increase()``; workers silent for
``worker_timeout`` seconds get ``celery_worker_up 0``, and every series of a host silent for
``purge_offline_worker_metrics`` seconds is removed.

What differs (docs/metrics.md): silence is measured on this machine's clock, from the last
event of any kind about the host, not from the worker's own heartbeat timestamps; hosts that only
*send* tasks (web servers, pods) are purged the same way (celery-exporter keeps them forever);
and the number of label sets is capped (``max_series``), the overflow counted, never kept.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aiocelerymon.metrics._text import (
    LABEL_NAME,
    METRIC_NAME,
    format_value,
    header,
    label_value,
    static_suffix,
)
from aiocelerymon.wire.event import utcoffset

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_QUEUE_WAIT_BUCKETS",
    "TASK_EVENTS",
    "MetricsCollector",
    "MetricsSettings",
    "QueueSample",
]

log = logging.getLogger("aiocelerymon.metrics")

INF = math.inf
#: ``prometheus_client.Histogram.DEFAULT_BUCKETS``, celery-exporter's ``--buckets`` default.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, INF,
)  # fmt: skip
#: celery-exporter 0.12's ``--queue-wait-buckets`` default: 50 ms to 30 min.
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, INF,
)  # fmt: skip

#: The task events celery-exporter counts, in its order (one counter each).
TASK_EVENTS = (
    "task-sent",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-rejected",
    "task-revoked",
    "task-retried",
)
_INDEX = {kind: i for i, kind in enumerate(TASK_EVENTS)}
_SENT, _STARTED, _SUCCEEDED, _FAILED = 0, 2, 3, 4
_COUNTERS = len(TASK_EVENTS)
_HELP = {
    "task-sent": "Tasks published (task-sent events; needs task_send_sent_event).",
    "task-received": "Tasks a worker received.",
    "task-started": "Tasks a worker started executing.",
    "task-succeeded": "Tasks that succeeded.",
    "task-failed": "Tasks that failed, by exception class.",
    "task-rejected": "Tasks a worker rejected (requeued or dead-lettered).",
    "task-revoked": "Tasks revoked.",
    "task-retried": "Tasks that failed and will be retried.",
}
#: The host label celery-exporter's ``--generic-hostname-*`` options write.
GENERIC = "generic"
#: Label names the metrics use themselves: a static label may not take one.
RESERVED_LABELS = frozenset(
    {"name", "hostname", "queue_name", "exception", "le", "worker", "task", "type"}
)


def _env_created_series() -> bool:
    # prometheus_client's switch for the `_created` series; celery-exporter users may set it.
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "").lower() not in (
        "true",
        "1",
        "t",
    )


def _check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: bucket bounds must be numbers, not {buckets!r}") from None
    if bounds and bounds[-1] != INF:
        bounds.append(INF)
    if len(bounds) < 2:
        raise ValueError(f"{name}: at least one finite bucket bound is needed")
    if any(b != b for b in bounds) or any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"{name}: bucket bounds must be strictly increasing numbers: {buckets!r}")
    return tuple(bounds)


@dataclass(frozen=True)
class MetricsSettings:
    """celery-exporter's options (same names, same defaults), and ours.

    ``worker_timeout`` / ``purge_offline_worker_metrics`` are seconds, 0 disables (celery-
    exporter's ``--worker-timeout`` / ``--purge-offline-worker-metrics``).
    """

    metric_prefix: str = "celery_"
    static_labels: Mapping[str, str] = field(default_factory=dict)
    buckets: Sequence[float] = DEFAULT_BUCKETS
    queue_wait_buckets: Sequence[float] = DEFAULT_QUEUE_WAIT_BUCKETS
    worker_timeout: float = 300.0
    purge_offline_worker_metrics: float = 600.0
    generic_hostname_task_sent_metric: bool = False
    generic_hostname_worker_task_metric: bool = False
    default_queue_name: str = "celery"
    #: Queues whose gauges exist before any worker consumes from them (``-Q/--queues``).
    queues: Sequence[str] = ()
    #: Also Flower's ``flower_*`` metrics, for dashboards made for Flower's ``/metrics``.
    flower_metrics: bool = False
    #: ``_created`` series, as ``prometheus_client`` writes them (off with its env variable).
    created_series: bool = field(default_factory=_env_created_series)
    #: Label sets (task name x host x queue) kept at most; beyond, events are counted as dropped.
    max_series: int = 200_000
    #: A new series shows 0 at its first scrape and its count from the next, so increase()
    #: and rate() count a short-lived worker's first task (celery-exporter's series start at 1).
    start_at_zero: bool = False

    def __post_init__(self) -> None:
        if not METRIC_NAME.match(f"{self.metric_prefix}task_sent_total"):
            raise ValueError(f"metric prefix {self.metric_prefix!r} makes invalid metric names")
        for key, value in self.static_labels.items():
            if not LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"static label name {key!r} is not a valid label name")
            if key in RESERVED_LABELS:
                raise ValueError(f"static label name {key!r} is used by the metrics themselves")
            if not isinstance(value, str):
                raise ValueError(f"static label {key!r} needs a string value, not {value!r}")
        object.__setattr__(self, "buckets", _check_buckets("buckets", self.buckets))
        object.__setattr__(
            self,
            "queue_wait_buckets",
            _check_buckets("queue wait buckets", self.queue_wait_buckets),
        )
        for name in ("worker_timeout", "purge_offline_worker_metrics"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
            if value == INF:
                raise ValueError(f"{name} must be finite (0 disables it)")
        if isinstance(self.max_series, bool) or not isinstance(self.max_series, int):
            raise ValueError(f"max_series must be an integer, not {self.max_series!r}")
        if self.max_series < 1:
            raise ValueError(f"max_series must be at least 1, not {self.max_series}")
        if not isinstance(self.default_queue_name, str):
            raise ValueError("default_queue_name must be a string")


@dataclass(frozen=True, slots=True)
class QueueSample:
    """One poll of one task queue: messages waiting, consumers (None: the broker cannot tell,
    as on Redis), workers consuming from it and their pool processes."""

    name: str
    length: int | None
    consumers: int | None
    workers: int
    processes: int


class _StateLike(Protocol):
    @property
    def tasks(self) -> Any: ...
    @property
    def workers(self) -> Any: ...


_EXCEPTION = re.compile(r"(\w+)\(")


def host_label(nodename: object) -> str:
    """The part of a node name after the first ``@`` (celery's ``nodesplit``), else all of it."""
    if nodename.__class__ is not str:
        return str(nodename)
    head, sep, tail = nodename.partition("@")
    return tail if sep else head


def exception_class(exception: object) -> str:
    """``ZeroDivisionError`` from ``"ZeroDivisionError('division by zero')"`` (celery-exporter's
    rule: a word followed by ``(``); ``UnknownException`` otherwise."""
    if exception.__class__ is str:
        match = _EXCEPTION.match(exception)
        if match is not None:
            return match.group(1)
    return "UnknownException"


def _number(value: object) -> float | None:
    if value.__class__ is float or value.__class__ is int:
        number = float(value)
        return number if number == number else None
    return None


class _Histogram:
    __slots__ = ("counts", "created", "n", "total")

    def __init__(self, buckets: int, created: float) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.n = 0
        self.created = created

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        # prometheus_client: the first bucket whose bound is >= the value.
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str, les: tuple[str, ...], *, zero: bool = False) -> str:
        out = []
        cumulative = 0
        for le, count in zip(les, self.counts, strict=True):
            cumulative += 0 if zero else count
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {float(cumulative)!r}\n')
        out.append(f"{name}_count{{{labels}}} {0.0 if zero else float(self.n)!r}\n")
        out.append(f"{name}_sum{{{labels}}} {format_value(0.0 if zero else self.total)}\n")
        return "".join(out)


# Rendered chunks of one task label set, one per family, in output order.
_CREATED = _COUNTERS  # chunks[_CREATED + i]: the `_created` line(s) of counter i
_RUNTIME = 2 * _COUNTERS
_RUNTIME_CREATED = _RUNTIME + 1
_WAIT = _RUNTIME + 2
_WAIT_CREATED = _RUNTIME + 3
_CHUNKS = _RUNTIME + 4


class _TaskSeries:
    """One ``(name, hostname, queue_name)`` label set: its eight counters and two histograms."""

    __slots__ = (
        "chunks",
        "counts",
        "created",
        "dirty",
        "exceptions",
        "fresh",
        "host",
        "key",
        "labels",
        "runtime",
        "wait",
    )

    def __init__(self, key: tuple[str, str, str], labels: str, host: str) -> None:
        self.key = key
        self.host = host
        self.labels = labels
        #: Counter values; None while the counter has no child (celery-exporter never created it).
        self.counts: list[float | None] = [None] * _COUNTERS
        self.created = [0.0] * _COUNTERS
        #: task_failed children with an exception class: class -> [value, created].
        self.exceptions: dict[str, list[float]] | None = None
        self.runtime: _Histogram | None = None
        self.wait: _Histogram | None = None
        self.chunks: list[bytes] = [b""] * _CHUNKS
        self.dirty = False
        #: With ``start_at_zero``: children not scraped yet (rendered as 0 once).
        self.fresh: set[object] | None = None


class _Host:
    """A ``hostname`` label value: the gauges celery-exporter keeps per host, and its series."""

    __slots__ = ("active", "forgotten", "heartbeat", "label", "nodes", "seen", "series", "up")

    def __init__(self, label: str, now: float) -> None:
        self.label = label
        self.up: float | None = None
        self.active: float | None = None
        #: When a heartbeat/online event last came (celery-exporter's ``worker_last_seen``).
        self.heartbeat: float | None = None
        self.forgotten = False
        #: When any event about this host last came (for the purge).
        self.seen = now
        self.series: set[tuple[str, str, str]] = set()
        self.nodes: set[str] = set()


class _Node:
    """One worker node name, for the lost-event estimate."""

    __slots__ = ("base_processed", "base_started", "gap", "lost", "processed", "started")

    def __init__(self) -> None:
        self.started = 0
        self.processed: int | None = None
        self.base_processed = 0
        self.base_started = 0
        #: Accepted minus seen at the last heartbeat.
        self.gap = 0
        #: Tasks the worker accepted (heartbeat ``processed``) whose ``task-started`` never came.
        self.lost = 0

    def heartbeat(self, processed: int) -> None:
        """Celery counts ``processed`` in ``Request.on_accepted``, the call that sends
        ``task-started``. But a worker with an event loop buffers task events and sends its
        heartbeats at once, so a heartbeat may overtake the ``task-started`` of the moment: a gap
        counts once two heartbeats in a row show it (the smaller of the two)."""
        if self.processed is None or processed < self.processed:
            # First heartbeat seen, or the worker restarted: count from here.
            self.base_processed = processed
            self.base_started = self.started
            self.gap = self.lost = 0
        self.processed = processed
        gap = max(0, (processed - self.base_processed) - (self.started - self.base_started))
        self.lost = min(gap, self.gap)
        self.gap = gap


class MetricsCollector:
    """Counts the event stream into celery-exporter's metrics; :meth:`render` writes them.

    Args:
        settings: celery-exporter's options (:class:`MetricsSettings`).
        stats: returns the pipeline's ingestion counters (``monitor.stats.as_dict()``); their
            ``aiocelerymon_*`` series are omitted without it.
        clock: wall clock, for ``_created``, timeouts and purges (tests pin it).
    """

    def __init__(
        self,
        settings: MetricsSettings | None = None,
        *,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = s = settings or MetricsSettings()
        self.stats = stats
        self._clock = clock
        self._prefix = s.metric_prefix
        self._static = static_suffix(s.static_labels)
        self._created = s.created_series
        self._generic_sent = s.generic_hostname_task_sent_metric
        self._generic_worker = s.generic_hostname_worker_task_metric
        self._default_queue = s.default_queue_name
        self._start_at_zero = s.start_at_zero
        self._buckets: tuple[float, ...] = tuple(s.buckets)
        self._les = tuple(format_value(b) for b in self._buckets)
        self._wait_buckets: tuple[float, ...] = tuple(s.queue_wait_buckets)
        self._wait_les = tuple(format_value(b) for b in self._wait_buckets)
        self._series: dict[tuple[str, str, str], _TaskSeries] = {}
        self._dirty: list[_TaskSeries] = []
        self._hosts: dict[str, _Host] = {}
        self._nodes: dict[str, _Node] = {}
        self._queues: dict[str, QueueSample | None] = dict.fromkeys(s.queues)
        self._last_event: Mapping[str, Any] | None = None
        self._expired_at = -math.inf
        self._here = utcoffset()
        #: Events seen, label sets refused by ``max_series``, hosts purged.
        self.events = 0
        self.dropped = 0
        self.purged_hosts = 0
        #: Queue polls that failed (set by the poller).
        self.queue_poll_errors = 0
        self.flower = None
        if s.flower_metrics:
            from aiocelerymon.metrics.flower import FlowerMetrics

            self.flower = FlowerMetrics(self._buckets, self._static, clock=clock)

    # -- ingestion (the pipeline's listener) ---------------------------------------------------

    def attach(self, monitor: Any) -> Callable[[], None]:
        """Listen to ``monitor`` (an :class:`aiocelerymon.pipeline.Monitor`) and report its
        ingestion stats; returns the function that stops listening."""
        self.stats = lambda: monitor.stats.as_dict()
        remove: Callable[[], None] = monitor.add_listener(self.on_event)
        return remove

    def on_event(self, event: Mapping[str, Any], state: _StateLike) -> None:
        """Count one event; ``state`` has applied it already."""
        self.events += 1
        self._last_event = event
        if not self.events & 63:
            # Expire between scrapes too: a monitor nobody scrapes stays bounded under churn.
            now = self._clock()
            if now - self._expired_at >= 1.0:
                self.expire(now)
        kind = event.get("type")
        index = _INDEX.get(kind)  # type: ignore[arg-type]
        if index is not None:
            self._task_event(index, event, state)
        elif kind == "worker-heartbeat":
            self._heartbeat(event, state)
        elif kind == "worker-online" or kind == "worker-offline":
            self._worker_status(event, kind == "worker-online")
        if self.flower is not None:
            self.flower.on_event(event, state)

    def _host(self, label: str, now: float) -> _Host:
        host = self._hosts.get(label)
        if host is None:
            host = _Host(label, now)
            if len(self._hosts) < self.settings.max_series:
                self._hosts[label] = host
            else:  # full: a host record that is never kept (nor shown), counted as dropped
                self.dropped += 1
        else:
            host.seen = now
        return host

    def _task_event(self, index: int, event: Mapping[str, Any], state: _StateLike) -> None:
        now = self._clock()
        task = state.tasks.data.get(event.get("uuid"))
        if task is None:  # the State refused or dropped it: label from the event alone
            name, node = event.get("name"), event.get("hostname")
            queue: Any = event.get("queue", self._default_queue)
        else:
            name = task.name
            node = getattr(task, "hostname", None) or event.get("hostname")
            queue = getattr(task, "queue", self._default_queue)
        real_host = host_label(node)
        if index == _SENT:
            label = GENERIC if self._generic_sent else real_host
        else:
            label = GENERIC if self._generic_worker else real_host
        key = (name if name.__class__ is str else str(name), label, str(queue))
        series = self._series.get(key)
        host = self._host(label, now)
        if series is None:
            if len(self._series) >= self.settings.max_series or label not in self._hosts:
                self.dropped += 1  # no room (for the series, or for its host)
                return
            labels = (
                f'name="{label_value(key[0])}",hostname="{label_value(label)}",'
                f'queue_name="{label_value(key[2])}"{self._static}'
            )
            series = self._series[key] = _TaskSeries(key, labels, label)
            host.series.add(key)
            if self._start_at_zero:
                series.fresh = set()
        counts = series.counts
        if index != _SENT:
            # celery-exporter 0.11's inc(0): the other counters of this label set exist from
            # now, task_sent too (task_failed's exception="" child except on task-failed).
            for i in range(_COUNTERS):
                if counts[i] is None and i != index and not (i == _FAILED and index == _FAILED):
                    counts[i] = 0.0
                    series.created[i] = now
            if index == _STARTED and node is not None:
                nodename = node if node.__class__ is str else str(node)
                worker = self._nodes.get(nodename)
                if worker is None:
                    worker = self._nodes[nodename] = _Node()
                    self._host(real_host, now).nodes.add(nodename)
                worker.started += 1
                if task is not None and task.sent is not None:
                    self._observe_wait(series, task, event, now)
            elif index == _SUCCEEDED and task is not None:
                runtime = _number(task.runtime)
                if runtime is not None:
                    if series.runtime is None:
                        series.runtime = _Histogram(len(self._buckets), now)
                        if series.fresh is not None:
                            series.fresh.add(_RUNTIME)
                    series.runtime.observe(self._buckets, runtime)
        if index == _FAILED:
            cls = exception_class(task.exception if task is not None else event.get("exception"))
            exceptions = series.exceptions
            if exceptions is None:
                exceptions = series.exceptions = {}
            child = exceptions.get(cls)
            if child is None:
                exceptions[cls] = [1.0, now]
                if series.fresh is not None:
                    series.fresh.add(cls)
            else:
                child[0] += 1.0
        else:
            value = counts[index]
            if value is None:
                counts[index] = 1.0
                series.created[index] = now
                if series.fresh is not None:
                    series.fresh.add(index)
            else:
                counts[index] = value + 1.0
        if not series.dirty:
            series.dirty = True
            self._dirty.append(series)
        if index == _SENT and task is not None and task.started is not None:
            # The worker started it before the client's task-sent arrived (the client publishes
            # the message first): observe the wait now, on the worker's label set. celery-
            # exporter 0.12 never observes these.
            self._late_sent_wait(task, key, event, now)

    def _late_sent_wait(
        self, task: Any, key: tuple[str, str, str], event: Mapping[str, Any], now: float
    ) -> None:
        worker = task.worker
        node = getattr(worker, "hostname", None) if worker is not None else None
        if node is None:
            return
        label = GENERIC if self._generic_worker else host_label(node)
        series = self._series.get((key[0], label, key[2]))
        if series is None:
            return
        self._observe_wait(series, task, event, now)
        if not series.dirty:
            series.dirty = True
            self._dirty.append(series)

    def _observe_wait(
        self, series: _TaskSeries, task: Any, event: Mapping[str, Any], now: float
    ) -> None:
        # celery-exporter 0.12: started minus sent, or minus the ETA when that is later
        # (a countdown or a retry's backoff is not time spent waiting for a worker).
        started, sent = _number(task.started), _number(task.sent)
        if started is None or sent is None:
            return
        baseline = sent
        eta = task.eta
        if eta.__class__ is str:
            try:
                eta_ts = datetime.fromisoformat(eta).timestamp()
            except (ValueError, OverflowError, OSError):
                eta_ts = None
            if eta_ts is not None:
                offset = _number(event.get("utcoffset"))
                if offset is not None:  # localised as the receiver localised the timestamps
                    eta_ts -= (offset - self._here) * 3600
                baseline = max(baseline, eta_ts)
        if series.wait is None:
            series.wait = _Histogram(len(self._wait_buckets), now)
            if series.fresh is not None:
                series.fresh.add(_WAIT)
        series.wait.observe(self._wait_buckets, max(0.0, started - baseline))

    def _heartbeat(self, event: Mapping[str, Any], state: _StateLike) -> None:
        now = self._clock()
        nodename = event.get("hostname")
        host = self._host(host_label(nodename), now)
        host.heartbeat = now
        host.forgotten = False
        worker = state.workers.data.get(nodename)
        if worker is not None:
            host.up = 1.0 if worker.alive else 0.0
            active = worker.active
        else:
            host.up = 1.0
            active = event.get("active")
        host.active = _number(active) or 0.0
        self._processed(nodename, event, host)

    def _worker_status(self, event: Mapping[str, Any], online: bool) -> None:
        now = self._clock()
        nodename = event.get("hostname")
        host = self._host(host_label(nodename), now)
        if online:
            host.up = 1.0
            host.heartbeat = now
            host.forgotten = False
            self._processed(nodename, event, host)
        else:
            # celery-exporter 0.11 sets worker_up 0 even for a host it never saw.
            host.up = 0.0
            self._forget(host)

    def _processed(self, nodename: Any, event: Mapping[str, Any], host: _Host) -> None:
        processed = event.get("processed")
        if processed.__class__ is not int or nodename.__class__ is not str:
            return
        node = self._nodes.get(nodename)
        if node is None:
            node = self._nodes[nodename] = _Node()
            host.nodes.add(nodename)
        node.heartbeat(processed)

    def _forget(self, host: _Host) -> None:
        if host.heartbeat is not None:
            host.up = 0.0
            host.active = 0.0
            host.forgotten = True

    # -- queues (the poller) -------------------------------------------------------------------

    def update_queues(self, samples: Sequence[QueueSample]) -> None:
        """Replace the queue gauges with one poll's results; queues seen once stay listed
        (celery-exporter's queue cache), so a queue whose workers all left still shows."""
        queues = self._queues
        for sample in samples:
            if sample.name in queues or len(queues) < self.settings.max_series:
                queues[sample.name] = sample

    @property
    def queue_names(self) -> list[str]:
        """Every queue the gauges cover (initial ones and those seen in a poll)."""
        return list(self._queues)

    # -- expiry --------------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> None:
        """Time out silent workers and purge silent hosts (done by every :meth:`render`)."""
        s = self.settings
        timeout, purge = s.worker_timeout, s.purge_offline_worker_metrics
        if not timeout and not purge:
            return
        now = self._clock() if now is None else now
        self._expired_at = now
        for host in list(self._hosts.values()):
            if (
                timeout
                and host.heartbeat is not None
                and not host.forgotten
                and now - host.heartbeat > timeout
            ):
                self._forget(host)
            if purge and host.label != GENERIC and now - host.seen > purge:
                self._purge(host)

    def _purge(self, host: _Host) -> None:
        series = self._series
        for key in host.series:
            gone = series.pop(key, None)
            if gone is not None:
                gone.dirty = False  # may still be listed in _dirty: rendered, never shown
        for nodename in host.nodes:
            self._nodes.pop(nodename, None)
        if self.flower is not None:
            self.flower.forget(host.label)
        del self._hosts[host.label]
        self.purged_hosts += 1

    # -- rendering -----------------------------------------------------------------------------

    @property
    def series_count(self) -> int:
        """Label sets of task metrics held (each is up to ~40 samples)."""
        return len(self._series)

    def _render_series(self, series: _TaskSeries) -> None:
        # Values as repr(float): what Prometheus parses (prometheus_client's Go-style exponent
        # only matters for `le`, whose texts are computed once).
        prefix, created_on = self._prefix, self._created
        chunks, labels = series.chunks, series.labels
        zero = series.fresh or ()
        for i, value in enumerate(series.counts):
            if i == _FAILED:
                continue
            if value is None:
                chunks[i] = chunks[_CREATED + i] = b""
                continue
            if i in zero:
                value = 0.0
            base = f"{prefix}task_{TASK_EVENTS[i][5:]}"
            # errors="replace": a lone surrogate in a label (not UTF-8) must not fail scrapes.
            chunks[i] = f"{base}_total{{{labels}}} {value!r}\n".encode(errors="replace")
            if created_on and not chunks[_CREATED + i]:  # set once: a created time never moves
                line = f"{base}_created{{{labels}}} {series.created[i]!r}\n"
                chunks[_CREATED + i] = line.encode(errors="replace")
        # task_failed: labels name, hostname, exception, queue_name (celery-exporter's order).
        name, host, queue = series.key
        head = f'name="{label_value(name)}",hostname="{label_value(host)}",exception="'
        tail = f'",queue_name="{label_value(queue)}"{self._static}'
        failed = []
        created = []
        base = prefix + "task_failed"
        blank = series.counts[_FAILED]
        if blank is not None:
            failed.append(f"{base}_total{{{head}{tail}}} {blank!r}\n")
            created.append(f"{base}_created{{{head}{tail}}} {series.created[_FAILED]!r}\n")
        for cls, (count, when) in (series.exceptions or {}).items():
            lbl = f"{head}{label_value(cls)}{tail}"
            failed.append(f"{base}_total{{{lbl}}} {0.0 if cls in zero else count!r}\n")
            created.append(f"{base}_created{{{lbl}}} {when!r}\n")
        chunks[_FAILED] = "".join(failed).encode(errors="replace")
        chunks[_CREATED + _FAILED] = (
            "".join(created).encode(errors="replace") if created_on else b""
        )
        for hist, at, name_, les in (
            (series.runtime, _RUNTIME, "task_runtime", self._les),
            (series.wait, _WAIT, "task_queue_wait_time", self._wait_les),
        ):
            if hist is not None:
                chunks[at] = hist.lines(prefix + name_, labels, les, zero=at in zero).encode(
                    errors="replace"
                )
                if created_on and not chunks[at + 1]:
                    line = f"{prefix}{name_}_created{{{labels}}} {hist.created!r}\n"
                    chunks[at + 1] = line.encode(errors="replace")

    def render(self) -> bytes:
        """The metrics in Prometheus text format 0.0.4; cost grows with the live series only."""
        now = self._clock()
        self.expire(now)
        again: list[_TaskSeries] = []
        for series in self._dirty:
            if series.dirty:
                self._render_series(series)
                if series.fresh:  # shown as 0 this time: the real counts at the next scrape
                    series.fresh.clear()
                    again.append(series)
                else:
                    series.dirty = False
        self._dirty = again
        out: list[bytes] = []
        all_series = self._series.values()
        prefix = self._prefix
        for i, kind in enumerate(TASK_EVENTS):
            base = f"{prefix}task_{kind[5:]}"
            out.append(header(f"{base}_total", "counter", _HELP[kind]).encode())
            out.extend(s.chunks[i] for s in all_series)
            if self._created:
                lines = b"".join(s.chunks[_CREATED + i] for s in all_series)
                if lines:
                    out.append(header(f"{base}_created", "gauge", _HELP[kind]).encode())
                    out.append(lines)
        text: list[str] = []
        self._render_workers(text)
        out.append("".join(text).encode(errors="replace"))
        for at, name, help_text in (
            (_RUNTIME, "task_runtime", "Task runtime in seconds (task-succeeded events)."),
            (
                _WAIT,
                "task_queue_wait_time",
                "Seconds from task-sent (or the ETA, if later) to task-started.",
            ),
        ):
            out.append(header(prefix + name, "histogram", help_text).encode())
            out.extend(s.chunks[at] for s in all_series)
            if self._created:
                lines = b"".join(s.chunks[at + 1] for s in all_series)
                if lines:
                    out.append(header(f"{prefix}{name}_created", "gauge", help_text).encode())
                    out.append(lines)
        text = []
        self._render_queues(text)
        self._render_health(text, now)
        if self.flower is not None:
            self.flower.render(text)
        out.append("".join(text).encode(errors="replace"))
        return b"".join(out)

    def _render_workers(self, out: list[str]) -> None:
        prefix, static = self._prefix, self._static
        hosts = self._hosts.values()
        out.append(
            header(f"{prefix}worker_up", "gauge", "1 if the worker sent a heartbeat lately.")
        )
        out.extend(
            f'{prefix}worker_up{{hostname="{label_value(h.label)}"{static}}} {h.up!r}\n'
            for h in hosts
            if h.up is not None
        )
        out.append(
            header(f"{prefix}worker_tasks_active", "gauge", "Tasks the worker is executing.")
        )
        out.extend(
            f'{prefix}worker_tasks_active{{hostname="{label_value(h.label)}"{static}}} '
            f"{h.active!r}\n"
            for h in hosts
            if h.active is not None
        )

    def _render_queues(self, out: list[str]) -> None:
        prefix, static = self._prefix, self._static
        samples = [(label_value(name), q) for name, q in self._queues.items() if q is not None]
        for name, attr, text in (
            ("queue_length", "length", "Messages waiting in the queue."),
            ("active_consumer_count", "consumers", "Consumers of the queue (AMQP only)."),
            ("active_worker_count", "workers", "Workers consuming from the queue."),
            (
                "active_process_count",
                "processes",
                "Pool processes of the workers consuming from the queue.",
            ),
        ):
            out.append(header(prefix + name, "gauge", text))
            for qname, sample in samples:
                value = getattr(sample, attr)
                if value is not None:
                    out.append(f'{prefix}{name}{{queue_name="{qname}"{static}}} {float(value)!r}\n')

    def _render_health(self, out: list[str], now: float) -> None:
        static = self._static.lstrip(",")
        braces = f"{{{static}}}" if static else ""

        def sample(name: str, kind: str, text: str, value: float | None) -> None:
            if value is None:
                return
            out.append(header(name, kind, text))
            out.append(f"{name}{braces} {format_value(float(value))}\n")

        sample(
            "aiocelerymon_events_received_total",
            "counter",
            "Events the monitor received and applied.",
            self.events,
        )
        stats = self.stats() if self.stats is not None else {}
        for key, name, text in (
            ("malformed", "events_malformed_total", "Event messages that could not be decoded."),
            ("rejected", "events_rejected_total", "Events the State refused (bad fields)."),
            ("gaps", "event_stream_gaps_total", "Reconnects of the event stream (events lost)."),
            ("redis_cutoffs", "redis_cutoffs_total", "Redis cut the pub/sub subscriber off."),
            ("listener_errors", "listener_errors_total", "Event listeners that raised."),
            ("missed", "push_events_dropped_total", "Events dropped for lagging push clients."),
        ):
            value = stats.get(key)
            if value is not None:
                sample(f"aiocelerymon_{name}", "counter", text, value)
        ready = stats.get("ready")
        if ready is not None:
            sample(
                "aiocelerymon_event_stream_up",
                "gauge",
                "1 while the event subscription is live.",
                1.0 if ready else 0.0,
            )
        last = self._last_event
        if last is not None:
            received = _number(last.get("local_received"))
            timestamp = _number(last.get("timestamp"))
            if received is not None:
                sample(
                    "aiocelerymon_last_event_timestamp_seconds",
                    "gauge",
                    "When the last event arrived (Unix time).",
                    received,
                )
            if received is not None and timestamp is not None:
                # Undo the receiver's utcoffset shift (Celery's adjust_timestamp) first: the
                # lag is between two Unix times.
                offset = _number(last.get("utcoffset"))
                if offset is not None:
                    timestamp += (offset - self._here) * 3600
                sample(
                    "aiocelerymon_event_lag_seconds",
                    "gauge",
                    "Arrival time minus the sender's timestamp, of the last event.",
                    received - timestamp,
                )
        static_tail = self._static
        lost = [
            (label, sum(self._nodes[n].lost for n in host.nodes if n in self._nodes))
            for label, host in self._hosts.items()
            if host.nodes
        ]
        out.append(
            header(
                "aiocelerymon_worker_events_lost_estimate",
                "gauge",
                "Tasks a host's workers report as accepted (heartbeat 'processed') that no "
                "task-started event was received for.",
            )
        )
        out.extend(
            f'aiocelerymon_worker_events_lost_estimate{{hostname="{label_value(label)}"'
            f"{static_tail}}} {float(count)!r}\n"
            for label, count in lost
        )
        sample(
            "aiocelerymon_metrics_series",
            "gauge",
            "Task label sets held (bounded by max_series and the purge).",
            len(self._series),
        )
        sample(
            "aiocelerymon_metrics_series_dropped_total",
            "counter",
            "Task events not counted because max_series label sets were held.",
            self.dropped,
        )
        sample(
            "aiocelerymon_metrics_hosts_purged_total",
            "counter",
            "Hosts whose series were removed after the purge window.",
            self.purged_hosts,
        )
        sample(
            "aiocelerymon_queue_poll_errors_total",
            "counter",
            "Queue polls (inspect and queue depth) that failed.",
            self.queue_poll_errors,
        )
