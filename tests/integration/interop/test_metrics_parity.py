"""celery-exporter and ``aiocelerymon exporter`` on the same real workers: the same metrics.

Both exporters run next to one real Celery worker (prefork, 2 processes) on each broker; the
same tasks (successes, failures, a retry, a revoke, with task-sent events) run once; then both
are scraped until they agree. Compared: every series name and label set, and every value
(counters, histogram buckets/sums/counts, worker and queue gauges), ``_created`` timestamps
aside. Left out: our own ``aiocelerymon_*`` series and ``celery_task_queue_wait_time``, which
celery-exporter only has from 0.12 (the package index has 0.11.2).

celery-exporter 0.11.2 pins redis<6 and kombu 5.7 needs redis>=6.1: it is installed in the
Celery 5.6 interop session only (noxfile), and this module runs there.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.celery_worker import CeleryWorker, celery_worker
from tests.support.interop import Variant, variant_url
from tests.support.metrics import (
    ExporterProcess,
    celery_exporter,
    comparable,
    describe_difference,
    ours,
    total,
    value,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.interop,
    # Deselected elsewhere (never skipped): only the Celery 5.6 session can install
    # celery-exporter (see above); there it must run.
    pytest.mark.celery_minors("5.6"),
]

APP = "tests.integration.celery_app"
DEADLINE = 90.0
#: celery-exporter's options, given to both exporters: none, or the ones that change names.
OPTIONS = ["--metric-prefix", "aio_", "--static-label", "env=ci", "--static-label", "team=data",
           "--generic-hostname-task-sent-metric", "-Q", "celery,reports"]  # fmt: skip
VARIANTS = [
    pytest.param(
        (Variant("redis-own", "redis", own=True), []), marks=pytest.mark.redis, id="redis"
    ),
    pytest.param((Variant("amqp-own", "amqp", own=True), []), marks=pytest.mark.amqp, id="amqp"),
    pytest.param(
        (Variant("redis-opts", "redis", own=True), OPTIONS),
        marks=pytest.mark.redis,
        id="redis-options",
    ),
]


@dataclass
class Cluster:
    variant: Variant
    options: list[str]
    url: str
    worker: CeleryWorker
    ours: ExporterProcess
    theirs: ExporterProcess
    ids: dict[str, str]


def _celery_app(url: str) -> Any:
    from celery import Celery

    app = Celery("sender", broker=url)
    # task-sent events, so celery_task_sent_total and the queue_name from task-sent count too.
    app.conf.task_send_sent_event = True
    app.conf.broker_connection_retry_on_startup = True
    return app


def _prefix(options: list[str]) -> str:
    return (
        options[options.index("--metric-prefix") + 1] if "--metric-prefix" in options else "celery_"
    )


def _worker_up(p: str) -> Any:
    return lambda found: total(found, f"{p}worker_up", hostname="interop") == 1.0


def _finished(p: str) -> Any:
    return lambda found: (
        total(found, f"{p}task_succeeded_total") >= 4  # 3 x add, retry_once
        and total(found, f"{p}task_failed_total") >= 2
        and total(found, f"{p}task_retried_total") >= 1
        and total(found, f"{p}task_revoked_total") >= 1
    )


def _run_tasks(url: str, exporters: list[ExporterProcess], p: str, backlog: bool) -> dict[str, str]:
    app = _celery_app(url)
    try:
        if backlog:  # waiting in a queue no worker consumes: celery_queue_length 3
            for i in range(3):
                app.send_task(f"{APP}.add", (i, i), queue="reports")
        ids = {f"add{i}": app.send_task(f"{APP}.add", (i, i)).id for i in range(3)}
        ids |= {f"fail{i}": app.send_task(f"{APP}.fail").id for i in range(2)}
        ids["retry"] = app.send_task(f"{APP}.retry_once").id
        ids["revoked"] = app.send_task(f"{APP}.sleep", (30,)).id
        for exporter in exporters:  # both saw it start: now revoke it
            exporter.wait_until(
                lambda f: total(f, f"{p}task_started_total", name=f"{APP}.sleep") >= 1,
                "the sleep task started",
                DEADLINE,
            )
        app.control.revoke(ids["revoked"], terminate=True, signal="SIGKILL")
        return ids
    finally:
        app.close()


@pytest.fixture(scope="module", params=VARIANTS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    variant, options = request.param
    p = _prefix(options)
    tmp: Path = tmp_path_factory.mktemp(f"parity-{variant.id}")
    with (
        variant_url(request, variant) as url,
        celery_worker(url, f"mx.{variant.id}@interop", concurrency=2, config=variant.config()) as w,
        celery_exporter(url, tmp, options=options) as theirs,
        ours(url, tmp, options=[*options, "--queue-interval", "1"]) as mine,
    ):
        # Each exporter's event consumer is live once it saw the worker's heartbeat.
        for exporter in (theirs, mine):
            exporter.wait_until(_worker_up(p), "the worker's heartbeat", DEADLINE)
        ids = _run_tasks(url, [theirs, mine], p, backlog=bool(options))
        for exporter in (theirs, mine):
            exporter.wait_until(_finished(p), "every task finished", DEADLINE)
        yield Cluster(variant, options, url, w, mine, theirs, ids)


def test_same_series_and_values_as_celery_exporter(cluster: Cluster) -> None:
    p = _prefix(cluster.options)

    def ignored(name: str) -> bool:
        return name.startswith(("aiocelerymon_", f"{p}task_queue_wait_time"))

    end = time.monotonic() + DEADLINE
    while True:
        a = comparable(cluster.ours.scrape(), ignored)
        b = comparable(cluster.theirs.scrape(), ignored)
        # Gauges follow heartbeats and polls: agree once both read the same quiet cluster.
        if a == b or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert a == b, describe_difference(a, b)
    # And the agreement says something: the real worker's tasks are in it.
    static = {"env": "ci", "team": "data"} if cluster.options else {}
    sender = "generic" if cluster.options else socket.gethostname()
    add = f"{APP}.add"
    on = {"hostname": "interop", "queue_name": "celery", **static}
    assert value(a, f"{p}task_succeeded_total", name=add, **on) == 3.0
    assert value(a, f"{p}task_sent_total", name=add, **{**on, "hostname": sender}) == 3.0
    assert value(a, f"{p}task_failed_total", name=f"{APP}.fail", exception="RuntimeError",
                 **on) == 2.0  # fmt: skip
    # Which label set a late task-received lands on depends on arrival order (Celery's State
    # merges only name/args/... from an event older than the task's state): both exporters
    # agree on it (above); the total is fixed.
    assert total(a, f"{p}task_received_total", name=f"{APP}.retry_once") == 2.0
    assert value(a, f"{p}task_runtime_count", name=add, **on) == 3.0
    assert value(a, f"{p}queue_length", queue_name="celery", **static) == 0.0
    assert value(a, f"{p}active_worker_count", queue_name="celery", **static) == 1.0
    assert value(a, f"{p}active_process_count", queue_name="celery", **static) == 2.0
    consumers = value(a, f"{p}active_consumer_count", queue_name="celery", **static)
    assert consumers == (1.0 if cluster.variant.broker == "amqp" else None)
    if cluster.options:  # -Q: a queue nobody consumes from has its gauges too
        assert value(a, f"{p}active_worker_count", queue_name="reports", **static) == 0.0
        assert value(a, f"{p}queue_length", queue_name="reports", **static) == 3.0
        sent = {"name": add, "hostname": "generic", "queue_name": "reports", **static}
        assert value(a, f"{p}task_sent_total", **sent) == 3.0


def test_our_own_health_series(cluster: Cluster) -> None:
    found = cluster.ours.scrape()
    assert total(found, "aiocelerymon_event_stream_up") == 1.0
    assert total(found, "aiocelerymon_events_malformed_total") == 0.0
    assert total(found, "aiocelerymon_events_received_total") > 20
    # Every task the worker accepted was seen starting: nothing lost.
    assert total(found, "aiocelerymon_worker_events_lost_estimate", hostname="interop") == 0.0
    # task_send_sent_event is on: the queue wait time of each started task was observed
    # (7 tasks, the retried one twice).
    p = _prefix(cluster.options)
    waits = total(found, f"{p}task_queue_wait_time_count", hostname="interop")
    assert waits == 8.0


def test_sigterm_stops_our_exporter_cleanly(cluster: Cluster) -> None:
    assert cluster.ours.stop() == 0
