"""1,000 concurrent ``ping(timeout=1)`` on a fresh client, two real workers (issue 19, item 5).

What a busy monitor does: many calls at once on one client that has not sent anything yet
(no reply queue, no exchange declared). Counted, per broker: calls answered by both workers,
calls that raised (before issue 19, hundreds raised "broker unreachable" on a healthy
RabbitMQ), and results lacking a worker; ours must flag each of those (``complete`` False,
the worker in ``missing``), and the row notes how many it flagged and how many it did not.
Celery's client is synchronous: ``THEIR_CALLS`` (10) calls on one app, one after the other,
each ``app.control.ping(timeout=1.0)``, which always waits out its timeout (from threads on
one app they stalled on Redis); the share answered by both, and calls completed per second.
These are measurements, not assertions.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiocelerymon import Client
from benchmarks.inspect_latency import _cluster

CALLS = 1000
TIMEOUT = 1.0
#: Celery's side: one call at a time (threads sharing one app's control client stalled on
#: Redis here, 10 threads as well as 50), each waiting out its timeout: 1,000 would take
#: 1,000 s, so it makes fewer, and the rows compare shares and rates.
THREADS = 1
THEIR_CALLS = 10


async def _ours(url: str, nodes: list[str], calls: int) -> dict[str, Any]:
    everyone = set(nodes)
    async with Client(url) as client:  # fresh: the calls race to declare and publish
        start = time.perf_counter()
        results = await asyncio.gather(
            *(client.control.ping(timeout=TIMEOUT) for _ in range(calls)),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - start
    both = raised = flagged = unflagged = 0
    for replies in results:
        if isinstance(replies, BaseException):
            raised += 1
            continue
        got = {n for r in replies for n in r}
        if got == everyone:
            both += 1
        elif not replies.complete and replies.missing == frozenset(everyone - got):
            flagged += 1
        else:
            unflagged += 1
    return {"both": both, "raised": raised, "flagged": flagged, "unflagged": unflagged,
            "elapsed": elapsed}  # fmt: skip


def _theirs(url: str, nodes: list[str], calls: int) -> dict[str, Any]:
    from celery import Celery

    everyone = set(nodes)
    app = Celery("aiocm-bench-burst", broker=url, set_as_current=False)

    def one(_: int) -> Any:
        try:
            return {n for r in app.control.ping(timeout=TIMEOUT) for n in r}
        except Exception as exc:  # counted, as ours
            return exc

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            start = time.perf_counter()
            results = list(pool.map(one, range(calls)))
            elapsed = time.perf_counter() - start
    finally:
        app.close()
    raised = sum(isinstance(r, Exception) for r in results)
    both = sum(r == everyone for r in results if not isinstance(r, Exception))
    return {"both": both, "raised": raised, "elapsed": elapsed}


def _rows(label: str, url: str, calls: int) -> list[dict[str, Any]]:
    with _cluster(url, f"{label}-burst") as (_app, nodes):
        ours = asyncio.run(_ours(url, nodes, calls))
        theirs = _theirs(url, nodes, min(calls, THEIR_CALLS))
    note = (
        f"ours: {ours['raised']} raised, {ours['flagged']} flagged incomplete, "
        f"{ours['unflagged']} unflagged; Celery: {THEIR_CALLS} calls one after the other, "
        f"{theirs['raised']} raised"
    )
    what = f"{calls:,} concurrent ping(timeout=1) on a fresh client ({label})"
    ours_share = 100 * ours["both"] / calls
    their_share = 100 * theirs["both"] / min(calls, THEIR_CALLS)
    return [
        {
            "name": f"{what}, calls answered by both workers",
            "note": note,
            "unit": "%",
            "ours": ours_share,
            "theirs": their_share,
            "ratio": ours_share / max(their_share, 0.1),
        },
        {
            "name": f"{what}, calls completed per second",
            "unit": "calls/s",
            "ours": calls / ours["elapsed"],
            "theirs": (their_rate := min(calls, THEIR_CALLS) / theirs["elapsed"]),
            "ratio": calls / ours["elapsed"] / their_rate,
        },
    ]


def run(
    *, quick: bool = False, redis_url: str | None = None, amqp_url: str | None = None
) -> list[dict[str, Any]]:
    """Two workers per broker given; the rows as benchmarks prints them."""
    calls = 200 if quick else CALLS
    rows: list[dict[str, Any]] = []
    if redis_url:
        rows += _rows("redis", redis_url, calls)
    if amqp_url:
        rows += _rows("amqp", amqp_url, calls)
    return rows


if __name__ == "__main__":
    import json

    from benchmarks.__main__ import _brokers

    # Just these rows, on brokers of their own: python -m benchmarks.concurrent_ping
    with _brokers() as (redis_url, amqp_url):
        found = run(redis_url=redis_url, amqp_url=amqp_url)
    print(json.dumps(found, indent=2))
