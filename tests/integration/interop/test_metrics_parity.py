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
    Samples,
    celery_exporter,
    celery_exporter_missing,
    comparable,
    describe_difference,
    ours,
    total,
    value,
)

pytestmark = [pytest.mark.integration, pytest.mark.interop]

_missing = celery_exporter_missing()
if _missing:
    pytest.skip(
        f"{_missing}: celery-exporter parity runs in the Celery 5.6 interop session",
        allow_module_level=True,
    )

APP = "tests.integration.celery_app"
DEADLINE = 90.0
VARIANTS = [
    pytest.param(Variant("redis-own", "redis", own=True), marks=pytest.mark.redis, id="redis"),
    pytest.param(Variant("amqp-own", "amqp", own=True), marks=pytest.mark.amqp, id="amqp"),
]


@dataclass
class Cluster:
    variant: Variant
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


def _worker_up(host: str) -> Any:
    return lambda found: value(found, "celery_worker_up", hostname=host) == 1.0


def _finished(found: Samples) -> bool:
    return (
        total(found, "celery_task_succeeded_total") >= 4  # 3 x add, retry_once
        and total(found, "celery_task_failed_total") >= 2
        and total(found, "celery_task_retried_total") >= 1
        and total(found, "celery_task_revoked_total") >= 1
    )


def _run_tasks(url: str, exporters: list[ExporterProcess]) -> dict[str, str]:
    app = _celery_app(url)
    try:
        ids = {f"add{i}": app.send_task(f"{APP}.add", (i, i)).id for i in range(3)}
        ids |= {f"fail{i}": app.send_task(f"{APP}.fail").id for i in range(2)}
        ids["retry"] = app.send_task(f"{APP}.retry_once").id
        ids["revoked"] = app.send_task(f"{APP}.sleep", (30,)).id
        for exporter in exporters:  # both saw it start: now revoke it
            exporter.wait_until(
                lambda f: total(f, "celery_task_started_total", name=f"{APP}.sleep") >= 1,
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
    variant: Variant = request.param
    tmp: Path = tmp_path_factory.mktemp(f"parity-{variant.id}")
    with (
        variant_url(request, variant) as url,
        celery_worker(url, f"mx.{variant.id}@interop", concurrency=2, config=variant.config()) as w,
        celery_exporter(url, tmp) as theirs,
        ours(url, tmp, options=["--queue-interval", "1"]) as mine,
    ):
        # Each exporter's event consumer is live once it saw the worker's heartbeat.
        for exporter in (theirs, mine):
            exporter.wait_until(_worker_up("interop"), "the worker's heartbeat", DEADLINE)
        ids = _run_tasks(url, [theirs, mine])
        for exporter in (theirs, mine):
            exporter.wait_until(_finished, "every task finished", DEADLINE)
        yield Cluster(variant, url, w, mine, theirs, ids)


def _ignored(name: str) -> bool:
    return name.startswith(("aiocelerymon_", "celery_task_queue_wait_time"))


def test_same_series_and_values_as_celery_exporter(cluster: Cluster) -> None:
    end = time.monotonic() + DEADLINE
    while True:
        a = comparable(cluster.ours.scrape(), _ignored)
        b = comparable(cluster.theirs.scrape(), _ignored)
        # Gauges follow heartbeats and polls: agree once both read the same quiet cluster.
        if a == b or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert a == b, describe_difference(a, b)
    # And the agreement says something: the real worker's tasks are in it.
    host = socket.gethostname()
    add = f"{APP}.add"
    assert value(a, "celery_task_succeeded_total", name=add, hostname="interop",
                 queue_name="celery") == 3.0  # fmt: skip
    assert value(a, "celery_task_sent_total", name=add, hostname=host, queue_name="celery") == 3.0
    assert value(a, "celery_task_failed_total", name=f"{APP}.fail", hostname="interop",
                 queue_name="celery", exception="RuntimeError") == 2.0  # fmt: skip
    assert value(a, "celery_task_received_total", name=f"{APP}.retry_once", hostname="interop",
                 queue_name="celery") == 2.0  # fmt: skip
    assert value(a, "celery_task_runtime_count", name=add, hostname="interop",
                 queue_name="celery") == 3.0  # fmt: skip
    assert value(a, "celery_queue_length", queue_name="celery") == 0.0
    assert value(a, "celery_active_worker_count", queue_name="celery") == 1.0
    assert value(a, "celery_active_process_count", queue_name="celery") == 2.0
    consumers = value(a, "celery_active_consumer_count", queue_name="celery")
    assert consumers == (1.0 if cluster.variant.broker == "amqp" else None)


def test_our_own_health_series(cluster: Cluster) -> None:
    found = cluster.ours.scrape()
    assert value(found, "aiocelerymon_event_stream_up") == 1.0
    assert (value(found, "aiocelerymon_events_malformed_total") or 0) == 0.0
    assert (value(found, "aiocelerymon_events_received_total") or 0) > 20
    # Every task the worker accepted was seen starting: nothing lost.
    assert value(found, "aiocelerymon_worker_events_lost_estimate", hostname="interop") == 0.0
    # task_send_sent_event is on: the queue wait time of each started task was observed
    # (7 tasks, the retried one twice).
    waits = total(found, "celery_task_queue_wait_time_count", hostname="interop")
    assert waits == 8.0


def test_sigterm_stops_our_exporter_cleanly(cluster: Cluster) -> None:
    assert cluster.ours.stop() == 0
