"""The collector on real event dicts: celery-exporter's names, labels and values, bounded.

Events are built by the project's wire builder and processed exactly as the receiver processes
them (``event_from_message``: clock, utcoffset shift, ``local_received``), applied to our State,
then to the collector; the output is read back with prometheus_client's own text parser.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiocelerymon import Client
from aiocelerymon.events import State
from aiocelerymon.events.receiver import event_from_message
from aiocelerymon.metrics import (
    DEFAULT_BUCKETS,
    MetricsCollector,
    MetricsSettings,
    QueueSample,
)
from aiocelerymon.testing import FakeWorker
from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.event import event as wire_event

COUNTERS = [
    f"celery_task_{k}" for k in ("sent", "received", "started", "succeeded", "failed",
                                 "rejected", "revoked", "retried")
]  # fmt: skip


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Feed:
    """A State and a collector fed the way the pipeline feeds them."""

    def __init__(self, collector: MetricsCollector) -> None:
        self.collector = collector
        self.state = State()
        self.lamport = LamportClock()

    def __call__(self, type_: str, hostname: str, **fields: Any) -> dict[str, Any]:
        clock = fields.pop("clock", self.lamport.forward())
        body = wire_event(type_, hostname=hostname, clock=clock, **fields)
        _, event = event_from_message(body, self.lamport)
        self.state.event(event)
        self.collector.on_event(event, self.state)
        return event

    def task(
        self,
        name: str,
        worker: str,
        *,
        fail: str | None = None,
        sent_by: str | None = None,
        queue: str | None = None,
        runtime: float = 0.2,
    ) -> str:
        task_id = str(uuid.uuid4())
        if sent_by is not None:
            self("task-sent", sent_by, uuid=task_id, name=name, queue=queue or "celery")
        self("task-received", worker, uuid=task_id, name=name, args="()", kwargs="{}")
        self("task-started", worker, uuid=task_id, pid=1)
        if fail:
            self("task-failed", worker, uuid=task_id, exception=fail, traceback="tb")
        else:
            self("task-succeeded", worker, uuid=task_id, result="None", runtime=runtime)
        return task_id

    def heartbeat(self, worker: str, active: int = 0, processed: int = 0) -> None:
        self("worker-heartbeat", worker, freq=2.0, active=active, processed=processed)


def parse(data: bytes) -> dict[str, Any]:
    """``{family name: family}`` as prometheus_client parses our output."""
    return {f.name: f for f in text_string_to_metric_families(data.decode())}


def samples(data: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{sorted labels: value}`` of the samples named ``name``."""
    out = {}
    for family in text_string_to_metric_families(data.decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def feed(clock: Clock) -> Iterator[Feed]:
    yield Feed(MetricsCollector(clock=clock))


def test_a_worker_task_creates_all_counters_of_its_label_set(feed: Feed) -> None:
    feed.task("proj.add", "celery@web-1")
    out = feed.collector.render()
    families = parse(out)
    for name in COUNTERS:
        assert families[name].type == "counter"
    assert families["celery_task_runtime"].type == "histogram"
    key = labels(name="proj.add", hostname="web-1", queue_name="celery")
    assert samples(out, "celery_task_received_total") == {key: 1.0}
    assert samples(out, "celery_task_started_total") == {key: 1.0}
    assert samples(out, "celery_task_succeeded_total") == {key: 1.0}
    for zero in ("rejected", "revoked", "retried"):
        assert samples(out, f"celery_task_{zero}_total") == {key: 0.0}
    # celery-exporter 0.11: a worker event pre-creates task_sent at the worker's host too, and
    # task_failed with an empty exception.
    assert samples(out, "celery_task_sent_total") == {key: 0.0}
    failed_key = labels(name="proj.add", hostname="web-1", queue_name="celery", exception="")
    assert samples(out, "celery_task_failed_total") == {failed_key: 0.0}
    # Each counter child has its _created gauge, as prometheus_client writes them.
    assert set(samples(out, "celery_task_received_created")) == {key}
    runtime = samples(out, "celery_task_runtime_bucket")
    bucket = {"name": "proj.add", "hostname": "web-1", "queue_name": "celery"}
    assert runtime[labels(**bucket, le="0.25")] == 1.0
    assert runtime[labels(**bucket, le="0.1")] == 0.0
    assert samples(out, "celery_task_runtime_count") == {key: 1.0}
    assert samples(out, "celery_task_runtime_sum") == {key: 0.2}


def test_failures_are_labelled_with_the_exception_class(feed: Feed) -> None:
    feed.task("proj.div", "celery@w", fail="ZeroDivisionError('division by zero')")
    feed.task("proj.div", "celery@w", fail="ZeroDivisionError('again')")
    feed.task("proj.div", "celery@w", fail="not a repr at all")
    out = feed.collector.render()
    base = {"name": "proj.div", "hostname": "w", "queue_name": "celery"}
    assert samples(out, "celery_task_failed_total") == {
        labels(**base, exception=""): 0.0,
        labels(**base, exception="ZeroDivisionError"): 2.0,
        labels(**base, exception="UnknownException"): 1.0,
    }
    assert samples(out, "celery_task_started_total") == {labels(**base): 3.0}


def test_task_sent_counts_at_the_clients_host_and_its_queue(clock: Clock) -> None:
    feed = Feed(MetricsCollector(clock=clock))
    feed.task("proj.add", "celery@worker-a", sent_by="gen42@web-pod-7", queue="high")
    out = feed.collector.render()
    sent = samples(out, "celery_task_sent_total")
    assert sent[labels(name="proj.add", hostname="web-pod-7", queue_name="high")] == 1.0
    # The worker's series take the queue task-sent named (the State keeps it).
    worker = labels(name="proj.add", hostname="worker-a", queue_name="high")
    assert samples(out, "celery_task_succeeded_total") == {worker: 1.0}
    assert sent[worker] == 0.0


def test_generic_hostname_options(clock: Clock) -> None:
    settings = MetricsSettings(
        generic_hostname_task_sent_metric=True,
        generic_hostname_worker_task_metric=True,
        default_queue_name="default",
    )
    feed = Feed(MetricsCollector(settings, clock=clock))
    feed.task("proj.add", "celery@pod-1", sent_by="gen1@web-1", queue="q1")
    feed.task("proj.add", "celery@pod-2")
    feed.heartbeat("celery@pod-2")
    out = feed.collector.render()
    sent = samples(out, "celery_task_sent_total")
    assert sent[labels(name="proj.add", hostname="generic", queue_name="q1")] == 1.0
    assert samples(out, "celery_task_succeeded_total") == {
        labels(name="proj.add", hostname="generic", queue_name="q1"): 1.0,
        labels(name="proj.add", hostname="generic", queue_name="default"): 1.0,
    }
    # Worker gauges keep the real host.
    assert samples(out, "celery_worker_up") == {labels(hostname="pod-2"): 1.0}


def test_prefix_static_labels_and_buckets(clock: Clock) -> None:
    settings = MetricsSettings(
        metric_prefix="myapp_",
        static_labels={"cluster": "eu-1", "team": 'a"b'},
        buckets=[0.5, 1, 2],
    )
    feed = Feed(MetricsCollector(settings, clock=clock))
    feed.task("t", "celery@h", runtime=1.5)
    feed.heartbeat("celery@h", active=3)
    out = feed.collector.render()
    families = parse(out)
    assert "myapp_task_received" in families and "celery_task_received" not in families
    static = {"cluster": "eu-1", "team": 'a"b'}
    key = labels(name="t", hostname="h", queue_name="celery", **static)
    assert samples(out, "myapp_task_received_total") == {key: 1.0}
    assert samples(out, "myapp_worker_tasks_active") == {labels(hostname="h", **static): 3.0}
    buckets = {dict(k)["le"]: v for k, v in samples(out, "myapp_task_runtime_bucket").items()}
    assert buckets == {"0.5": 0.0, "1.0": 0.0, "2.0": 1.0, "+Inf": 1.0}
    # Our own health series carry the static labels too.
    # Three task events and a heartbeat.
    assert samples(out, "aiocelerymon_events_received_total") == {labels(**static): 4.0}


def test_worker_gauges_follow_heartbeats_timeouts_and_offline(feed: Feed, clock: Clock) -> None:
    feed("worker-online", "celery@a", freq=2.0, active=0, processed=0)
    feed.heartbeat("celery@b", active=2)
    out = feed.collector.render()
    assert samples(out, "celery_worker_up") == {
        labels(hostname="a"): 1.0,
        labels(hostname="b"): 1.0,
    }
    assert samples(out, "celery_worker_tasks_active") == {labels(hostname="b"): 2.0}
    feed("worker-offline", "celery@a", freq=2.0, active=0, processed=0)
    clock.now += 301  # past --worker-timeout (300 s) for b
    out = feed.collector.render()
    assert samples(out, "celery_worker_up") == {
        labels(hostname="a"): 0.0,
        labels(hostname="b"): 0.0,
    }
    assert samples(out, "celery_worker_tasks_active") == {
        labels(hostname="a"): 0.0,
        labels(hostname="b"): 0.0,
    }
    feed.heartbeat("celery@b", active=1)
    assert samples(feed.collector.render(), "celery_worker_up")[labels(hostname="b")] == 1.0


def test_silent_hosts_are_purged_whole(feed: Feed, clock: Clock) -> None:
    feed.task("t", "celery@old")
    feed.heartbeat("celery@old", processed=1)
    clock.now += 300
    feed.task("t", "celery@new")
    clock.now += 301  # old: 601 s silent, new: 301 s
    out = feed.collector.render()
    hosts = {dict(k)["hostname"] for k in samples(out, "celery_task_received_total")}
    assert hosts == {"new"}
    assert samples(out, "celery_worker_up") == {}
    assert set(samples(out, "aiocelerymon_worker_events_lost_estimate")) == {labels(hostname="new")}
    assert samples(out, "aiocelerymon_metrics_hosts_purged_total") == {(): 1.0}
    # A host that comes back starts afresh, its counters pre-created at 0 again.
    feed.task("t", "celery@old")
    out = feed.collector.render()
    key = labels(name="t", hostname="old", queue_name="celery")
    assert samples(out, "celery_task_received_total")[key] == 1.0


def test_purge_and_timeout_can_be_disabled(clock: Clock) -> None:
    settings = MetricsSettings(worker_timeout=0, purge_offline_worker_metrics=0)
    feed = Feed(MetricsCollector(settings, clock=clock))
    feed.task("t", "celery@a")
    feed.heartbeat("celery@a")
    clock.now += 10**6
    out = feed.collector.render()
    assert samples(out, "celery_worker_up") == {labels(hostname="a"): 1.0}
    assert len(samples(out, "celery_task_received_total")) == 1


def test_ten_thousand_short_lived_hosts_leave_the_series_bounded(clock: Clock) -> None:
    """Kubernetes pod churn: every pod a new host name, each alive for a second or so."""
    settings = MetricsSettings(worker_timeout=30, purge_offline_worker_metrics=60)
    feed = Feed(MetricsCollector(settings, clock=clock))
    collector = feed.collector
    peak_series = peak_hosts = peak_bytes = 0
    for i in range(10_000):
        pod = f"celery@worker-{uuid.uuid4().hex[:10]}-{i}"
        feed("worker-online", pod, freq=2.0, active=0, processed=0)
        feed.task("proj.work", pod, sent_by=f"gen{i}@web-{i % 7}")
        feed.heartbeat(pod, processed=1)
        feed("worker-offline", pod, freq=2.0, active=0, processed=1)
        clock.now += 1.0
        # Bounded between scrapes too (expiry runs on the event path, once a second at most).
        peak_series = max(peak_series, collector.series_count)
        peak_hosts = max(peak_hosts, len(collector._hosts))
        if i % 1000 == 999:
            out = collector.render()
            peak_bytes = max(peak_bytes, len(out))
            assert len(samples(out, "celery_worker_up")) <= 75
    # A 60 s purge window at one new host a second: ~61 worker hosts (plus the expiry's step
    # of 64 events) and the 7 web hosts; each worker host has one label set, each web host one.
    assert peak_hosts <= 61 + 13 + 7
    assert peak_series <= peak_hosts
    assert len(collector.render()) <= peak_bytes * 1.05
    assert collector.purged_hosts >= 10_000 - 75
    # Memory per label value is bounded too: the lost-event nodes went with their hosts.
    assert len(collector._nodes) <= 75
    assert len(feed.state.tasks) <= feed.state.max_tasks_in_memory


def test_max_series_caps_label_sets_and_counts_the_rest(clock: Clock) -> None:
    feed = Feed(MetricsCollector(MetricsSettings(max_series=3), clock=clock))
    for i in range(5):
        feed.task(f"task-{i}", "celery@h")
    out = feed.collector.render()
    assert len(samples(out, "celery_task_received_total")) == 3
    assert samples(out, "aiocelerymon_metrics_series") == {(): 3.0}
    # Each dropped task had received, started and succeeded events.
    assert samples(out, "aiocelerymon_metrics_series_dropped_total") == {(): 6.0}
    # Host names are bounded by the same cap, even with the purge off.
    hosts = Feed(MetricsCollector(MetricsSettings(max_series=5, purge_offline_worker_metrics=0)))
    for i in range(20):
        hosts.heartbeat(f"celery@pod-{i}")
    assert len(samples(hosts.collector.render(), "celery_worker_up")) == 5
    assert hosts.collector.dropped == 15


def test_lost_events_estimate_from_heartbeat_processed(feed: Feed) -> None:
    def lost() -> dict[Any, float]:
        return samples(feed.collector.render(), "aiocelerymon_worker_events_lost_estimate")

    feed.heartbeat("celery@w", processed=10)  # joined late: counts from here
    feed.task("t", "celery@w")
    feed.task("t", "celery@w")
    feed.heartbeat("celery@w", processed=12)
    assert lost() == {labels(hostname="w"): 0.0}
    # A heartbeat that overtook a buffered task-started (Celery buffers task events, not
    # heartbeats): not a loss once the event arrives before the next heartbeat.
    feed.heartbeat("celery@w", processed=13)
    assert lost() == {labels(hostname="w"): 0.0}
    feed.task("t", "celery@w")
    feed.heartbeat("celery@w", processed=13)
    assert lost() == {labels(hostname="w"): 0.0}
    # Three more accepted, one task-started seen: two events lost, from the second heartbeat
    # that shows the gap on.
    feed.task("t", "celery@w")
    feed.heartbeat("celery@w", processed=16)
    feed.heartbeat("celery@w", processed=16)
    assert lost() == {labels(hostname="w"): 2.0}
    # A restart (processed goes back) starts a new baseline.
    feed.heartbeat("celery@w", processed=0)
    assert lost() == {labels(hostname="w"): 0.0}


def test_queue_wait_time_from_sent_or_eta(feed: Feed) -> None:
    tid = str(uuid.uuid4())
    feed("task-sent", "gen1@web", uuid=tid, name="t", queue="celery", timestamp=1000.0)
    feed("task-received", "celery@w", uuid=tid, name="t", timestamp=1002.0)
    feed("task-started", "celery@w", uuid=tid, pid=1, timestamp=1003.5)
    eta = str(uuid.uuid4())
    feed("task-sent", "gen1@web", uuid=eta, name="t", queue="celery", timestamp=1000.0)
    # ETA 1010 (UTC, in Celery's isoformat) then started at 1010.25: waited 0.25 s, not 10.25.
    feed("task-received", "celery@w", uuid=eta, name="t", eta="1970-01-01T00:16:50+00:00")
    feed("task-started", "celery@w", uuid=eta, pid=1, timestamp=1010.25)
    out = feed.collector.render()
    key = labels(name="t", hostname="w", queue_name="celery")
    assert samples(out, "celery_task_queue_wait_time_count") == {key: 2.0}
    assert samples(out, "celery_task_queue_wait_time_sum") == {key: 3.75}
    # Without task-sent there is no baseline: nothing observed (celery-exporter 0.12).
    feed.task("u", "celery@w")
    out = feed.collector.render()
    assert len(samples(out, "celery_task_queue_wait_time_count")) == 1
    # The worker started it before the client's task-sent arrived: observed when it does.
    late = str(uuid.uuid4())
    feed("task-received", "celery@w", uuid=late, name="t", timestamp=1001.0)
    feed("task-started", "celery@w", uuid=late, pid=1, timestamp=1001.5)
    feed("task-sent", "gen1@web", uuid=late, name="t", queue="celery", timestamp=1000.5)
    out = feed.collector.render()
    assert samples(out, "celery_task_queue_wait_time_count") == {key: 3.0}
    assert samples(out, "celery_task_queue_wait_time_sum") == {key: 4.75}


def test_render_reuses_unchanged_series_and_shows_changes(feed: Feed) -> None:
    for i in range(50):
        feed.task(f"t{i % 5}", f"celery@h{i % 3}")
    first = feed.collector.render()
    assert feed.collector.render() == first
    feed.task("t0", "celery@h0")
    second = feed.collector.render()
    key = labels(name="t0", hostname="h0", queue_name="celery")
    before = samples(first, "celery_task_succeeded_total")[key]
    assert samples(second, "celery_task_succeeded_total")[key] == before + 1


def test_queue_gauges_and_initial_queues(clock: Clock) -> None:
    collector = MetricsCollector(MetricsSettings(queues=["reports"]), clock=clock)
    out = collector.render()
    assert samples(out, "celery_queue_length") == {}
    collector.update_queues(
        [
            QueueSample("celery", 4, 2, 2, 8),
            QueueSample("reports", 0, None, 0, 0),
        ]
    )
    out = collector.render()
    assert samples(out, "celery_queue_length") == {
        labels(queue_name="celery"): 4.0,
        labels(queue_name="reports"): 0.0,
    }
    # No consumer count where the broker cannot tell (Redis): no series, as celery-exporter.
    assert samples(out, "celery_active_consumer_count") == {labels(queue_name="celery"): 2.0}
    assert samples(out, "celery_active_worker_count")[labels(queue_name="celery")] == 2.0
    assert samples(out, "celery_active_process_count")[labels(queue_name="celery")] == 8.0


def test_health_series_from_monitor_stats(feed: Feed) -> None:
    stats = {"malformed": 3, "rejected": 1, "gaps": 2, "redis_cutoffs": None, "ready": True,
             "listener_errors": 0, "missed": 5}  # fmt: skip
    feed.collector.stats = lambda: stats
    feed.heartbeat("celery@w")
    out = feed.collector.render()
    assert samples(out, "aiocelerymon_events_malformed_total") == {(): 3.0}
    assert samples(out, "aiocelerymon_event_stream_gaps_total") == {(): 2.0}
    assert samples(out, "aiocelerymon_event_stream_up") == {(): 1.0}
    # Not reported by the transport: no series rather than a made-up 0.
    assert "aiocelerymon_redis_cutoffs" not in parse(out)
    lag = samples(out, "aiocelerymon_event_lag_seconds")[()]
    assert 0 <= lag < 5


def test_start_at_zero_shows_new_series_at_zero_for_one_scrape(clock: Clock) -> None:
    """Prometheus' increase() ignores a series' first sample: a series that appears at 1 (a
    pod that ran one task) is counted as 0. With start_at_zero it appears at 0 first."""
    feed = Feed(MetricsCollector(MetricsSettings(start_at_zero=True), clock=clock))
    feed.task("t", "celery@pod-1", fail="KeyError('k')")
    key = labels(name="t", hostname="pod-1", queue_name="celery")
    failed = labels(name="t", hostname="pod-1", queue_name="celery", exception="KeyError")
    first = feed.collector.render()
    assert samples(first, "celery_task_received_total") == {key: 0.0}
    assert samples(first, "celery_task_failed_total")[failed] == 0.0
    second = feed.collector.render()
    assert samples(second, "celery_task_received_total") == {key: 1.0}
    assert samples(second, "celery_task_failed_total")[failed] == 1.0
    # A child created later on a series already scraped starts at 0 too (its runtime histogram).
    feed.task("t", "celery@pod-1")
    third = feed.collector.render()
    assert samples(third, "celery_task_succeeded_total") == {key: 1.0}
    assert samples(third, "celery_task_runtime_count") == {key: 0.0}
    assert samples(feed.collector.render(), "celery_task_runtime_count") == {key: 1.0}
    # Off (the default, as celery-exporter): counts from the first scrape.
    plain = Feed(MetricsCollector(clock=clock))
    plain.task("t", "celery@pod-1")
    assert samples(plain.collector.render(), "celery_task_received_total") == {key: 1.0}


def test_odd_label_values_are_escaped_and_never_fail_a_scrape(feed: Feed) -> None:
    feed.task('we"ird\\name\nx', "celery@h")
    feed.task("bad\ud800surrogate", "celery@h")  # not UTF-8: replaced, not a failed scrape
    feed.task(None, "celery@h")  # type: ignore[arg-type]  # prometheus_client writes "None"
    out = feed.collector.render()
    names = {dict(k)["name"] for k in samples(out, "celery_task_received_total")}
    assert names == {'we"ird\\name\nx', "bad?surrogate", "None"}


def test_created_series_can_be_switched_off(clock: Clock) -> None:
    feed = Feed(MetricsCollector(MetricsSettings(created_series=False), clock=clock))
    feed.task("t", "celery@h")
    assert not [name for name in parse(feed.collector.render()) if name.endswith("_created")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metric_prefix": "bad-prefix"},
        {"static_labels": {"hostname": "x"}},
        {"static_labels": {"1x": "x"}},
        {"buckets": [1, 0.5]},
        {"buckets": ["a"]},
        {"buckets": []},
        {"worker_timeout": -1},
        {"purge_offline_worker_metrics": math.inf},
        {"max_series": 0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MetricsSettings(**kwargs)


def test_default_buckets_are_prometheus_clients() -> None:
    from prometheus_client import Histogram

    assert tuple(Histogram.DEFAULT_BUCKETS) == DEFAULT_BUCKETS


async def test_fake_worker_events_through_the_receiver() -> None:
    """End to end on the in-memory broker: dispatcher -> receiver -> State -> collector."""
    async with Client("memory://") as client:
        state = State()
        collector = MetricsCollector(MetricsSettings(flower_metrics=True))

        def ingest(event: dict[str, Any]) -> None:
            state.event(event)
            collector.on_event(event, state)

        receiver = client.events.receiver(handlers={"*": ingest})
        capture = asyncio.create_task(receiver.capture())
        try:
            await asyncio.wait_for(receiver.ready.wait(), 5)
            async with FakeWorker(client, "celery@fake-1", freq=0.5) as worker:
                await worker.run_task("proj.add", (1, 2), result=3)
                await worker.run_task("proj.fail", exception=KeyError("k"))
                async with asyncio.timeout(5):
                    while collector.events < 7:  # online + 6 task events
                        await asyncio.sleep(0.01)
        finally:
            capture.cancel()
        out = collector.render()
    ok = labels(name="proj.add", hostname="fake-1", queue_name="celery")
    assert samples(out, "celery_task_succeeded_total")[ok] == 1.0
    bad = labels(name="proj.fail", hostname="fake-1", queue_name="celery", exception="KeyError")
    assert samples(out, "celery_task_failed_total")[bad] == 1.0
    flower = samples(out, "flower_events_total")
    assert flower[labels(worker="celery@fake-1", type="task-failed", task="proj.fail")] == 1.0
    assert samples(out, "flower_worker_online")[labels(worker="celery@fake-1")] in (0.0, 1.0)
