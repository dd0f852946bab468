"""Ping latency and inspect throughput against real Celery workers: ours vs Celery's client.

Given running brokers (Redis, and RabbitMQ when there is one), starts two real workers per broker
through ``tests.support``, then measures on the same cluster:

* **ping, everyone**: ``ping`` broadcast to all workers. Ours passes ``expected=`` (the workers a
  monitor knows from heartbeats) and returns when both answered; Celery's
  ``app.control.ping(timeout=1.0)`` cannot know when everyone answered and always waits for its
  idle gap to pass after the last reply.
* **ping, destination**: both clients address the two workers by name, so both finish early
  (Celery's ``limit = len(destination)``): the plain per-call cost of each client.
* **concurrent inspect ping**: many ``inspect(destination=...).ping()`` calls at once on one client
  (ours: asyncio tasks on one reply queue, up to ``IN_FLIGHT`` at a time; Celery's: a pool of
  ``THREADS`` threads on one app), in calls/s. Both are bounded by the two workers, which
  answer one request at a time.

Latencies are p50/p95 over ``runs`` calls, in microseconds. These are measurements, not assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiocelerymon import Client
from tests.support import brokers
from tests.support.celery_worker import celery_worker

#: Celery's default inspect timeout (an idle gap); ours is a total deadline we never reach here.
CELERY_TIMEOUT = 1.0
OUR_TIMEOUT = 10.0
#: Celery's side: a thread pool on one app (its broker pool holds 10 connections).
THREADS = 8
#: Our side: calls in flight at once on one client (all of them in a full run).
IN_FLIGHT = 1000


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]


def _us(seconds: list[float]) -> list[float]:
    return [s * 1e6 for s in seconds]


@contextlib.contextmanager
def _cluster(url: str, label: str) -> Iterator[tuple[Any, list[str]]]:
    """Two real workers and a Celery app on ``url``; yields ``(app, nodenames)``."""
    from celery import Celery

    nodes = [f"bench-a.{label}@bench", f"bench-b.{label}@bench"]
    app = Celery("aiocm-bench", broker=url, set_as_current=False)
    try:
        with contextlib.ExitStack() as stack:
            for node in nodes:
                stack.enter_context(celery_worker(url, node, events=False))
            _wait_answering(app, nodes)
            yield app, nodes
    finally:
        app.close()


def _wait_answering(app: Any, nodes: list[str], deadline: float = 60.0) -> None:
    # "ready." is logged before the pidbox consumer is certain to be up.
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        replies = app.control.ping(destination=nodes, timeout=1.0)
        if {n for r in replies for n in r} >= set(nodes):
            return
    raise RuntimeError(f"workers {nodes} never answered ping")


def _time_sync(call: Callable[[], Any], runs: int, check: Callable[[Any], bool]) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - start)
        assert check(result), result
    return samples


async def _ours(
    url: str, nodes: list[str], runs: int, calls: int
) -> tuple[list[float], list[float], float]:
    def both(replies: Any) -> bool:
        return replies is not None and {n for r in replies for n in r} == set(nodes)

    async with Client(url) as client:
        await client.control.ping(destination=nodes, timeout=OUR_TIMEOUT)  # reply queue, warm-up
        everyone, addressed = [], []
        for _ in range(runs):
            start = time.perf_counter()
            replies = await client.control.ping(expected=nodes, timeout=OUR_TIMEOUT)
            everyone.append(time.perf_counter() - start)
            assert both(replies), replies
        for _ in range(runs):
            start = time.perf_counter()
            replies = await client.control.ping(destination=nodes, timeout=OUR_TIMEOUT)
            addressed.append(time.perf_counter() - start)
            assert both(replies), replies
        inspect = client.control.inspect(destination=nodes, timeout=OUR_TIMEOUT)
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one() -> Any:
            async with slots:
                return await inspect.ping()

        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(calls)))
        elapsed = time.perf_counter() - start
        assert all(r is not None and set(r) == set(nodes) for r in results)
    return everyone, addressed, calls / elapsed


def _theirs(
    app: Any, nodes: list[str], runs: int, calls: int
) -> tuple[list[float], list[float], float]:
    def both(replies: Any) -> bool:
        return {n for r in replies for n in r} == set(nodes)

    control = app.control
    control.ping(destination=nodes, timeout=CELERY_TIMEOUT)  # warm-up: pool connection, queue
    everyone = _time_sync(lambda: control.ping(timeout=CELERY_TIMEOUT), runs, both)
    addressed = _time_sync(
        lambda: control.ping(destination=nodes, timeout=CELERY_TIMEOUT), runs, both
    )

    def one(_: int) -> Any:
        return control.inspect(destination=nodes, timeout=OUR_TIMEOUT).ping()

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(THREADS)))  # warm-up: one reply queue per thread
        start = time.perf_counter()
        results = list(pool.map(one, range(calls)))
        elapsed = time.perf_counter() - start
    assert all(r is not None and set(r) == set(nodes) for r in results)
    return everyone, addressed, calls / elapsed


def _rows(label: str, url: str, runs: int, calls: int) -> list[dict[str, Any]]:
    with _cluster(url, label) as (app, nodes):
        ours_all, ours_dest, ours_rate = asyncio.run(_ours(url, nodes, runs, calls))
        their_all, their_dest, their_rate = _theirs(app, nodes, runs, calls)
    rows: list[dict[str, Any]] = []
    for what, ours, theirs in (
        ("ping 2 workers, everyone", ours_all, their_all),
        ("ping 2 workers, destination", ours_dest, their_dest),
    ):
        for q in (0.5, 0.95):
            rows.append(
                {
                    "name": f"{what}, p{round(q * 100)} ({label}; lower is better)",
                    "unit": "µs",
                    "ours": (mine := _percentile(_us(ours), q)),
                    "theirs": (celerys := _percentile(_us(theirs), q)),
                    # Latency: the ratio says how many times faster we answer.
                    "ratio": celerys / mine,
                }
            )
    rows.append(
        {
            "name": f"inspect ping throughput, {calls} calls on one client ({label})",
            "unit": "calls/s",
            "ours": ours_rate,
            "theirs": their_rate,
        }
    )
    return rows


def run(
    *, quick: bool = False, redis_url: str | None = None, amqp_url: str | None = None
) -> list[dict[str, Any]]:
    """Start two workers per broker given, measure, stop them; rows as benchmarks prints."""
    runs = 5 if quick else 20
    calls = 100 if quick else 1000
    rows: list[dict[str, Any]] = []
    if redis_url:
        rows += _rows("redis", redis_url, runs, calls)
    if amqp_url:
        rows += _rows("amqp", amqp_url, runs, calls)
    return rows


if __name__ == "__main__":
    with brokers.redis_server() as redis:
        found = run(quick=True, redis_url=redis.url)
    for row in found:
        print(f"{row['name']}: ours {row['ours']:,.1f} {row['unit']}, theirs {row['theirs']:,.1f}")
