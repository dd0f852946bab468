"""Run every benchmark, print the side-by-side table and rewrite docs/benchmarks.md.

``--no-brokers`` runs only decode and State (no broker, no worker); otherwise one Redis and one
RabbitMQ server are started (through ``tests.support.brokers``) and shared by the end-to-end
ingestion and the inspect-latency benchmarks. ``--json`` also writes machine-readable results
(default ``docs/benchmarks.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import (
    concurrent_ping,
    decode,
    history,
    ingest,
    inspect_latency,
    metrics,
    page,
    state,
    web,
)
from tests.support import brokers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"
JSON_RESULTS = ROOT / "docs" / "benchmarks.json"
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"

#: name prefix -> (target text, check(row)). Each row gets "met" / "not met" against its target.
TARGETS: list[tuple[str, str, Callable[[dict[str, Any]], bool]]] = [
    ("ingest Redis batched,", ">= 100,000 events/s and >= 10x",
     lambda r: r["ours"] >= 100_000 and r["ours"] / r["theirs"] >= 10),
    ("ingest RabbitMQ batched,", ">= 60,000 events/s and >= 3x",
     lambda r: r["ours"] >= 60_000 and r["ours"] / r["theirs"] >= 3),
    ("ingest Redis singles,", ">= 2x", lambda r: r["ours"] / r["theirs"] >= 2),
    ("ingest RabbitMQ singles,", ">= 2x", lambda r: r["ours"] / r["theirs"] >= 2),
    ("State, ", ">= 300,000 events/s at max_tasks 100k",
     lambda r: "100,000" not in r["name"] or r["ours"] >= 300_000),
    ("bytes per retained", "<= 1,024 B", lambda r: r["ours"] <= 1024),
    ("ping 2 workers, everyone, p50", "<= 20,000 µs", lambda r: r["ours"] <= 20_000),
    ("ingest with history,", ">= 80% of store off", lambda r: r["ours"] / r["theirs"] >= 0.8),
]  # fmt: skip


def _target(row: dict[str, Any]) -> str:
    for prefix, text, check in TARGETS:
        if row["name"].startswith(prefix) and "CPU" not in row["name"]:
            if prefix == "State, " and not (
                "task events" in row["name"] and "100,000" in row["name"]
            ):
                return ""  # the target is for the batched stream at max_tasks 100k
            return f"{text}: {'met' if check(row) else '**not met**'}"
    return ""


def _unavailable(exc: BaseException) -> bool:
    # tests.support.brokers skips through pytest when pytest is importable, else raises its own.
    return isinstance(exc, brokers.BrokerUnavailableError) or type(exc).__name__ == "Skipped"


@contextlib.contextmanager
def _brokers() -> Iterator[tuple[str, str | None]]:
    with brokers.redis_server() as redis, contextlib.ExitStack() as stack:
        amqp_url = None
        try:
            amqp_url = stack.enter_context(brokers.rabbit_server()).url
        except BaseException as exc:
            if not _unavailable(exc):
                raise
            print(f"benchmarks: no RabbitMQ, Redis rows only ({exc})")
        yield redis.url, amqp_url


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument(
        "--json", type=Path, default=JSON_RESULTS, help="machine-readable results file"
    )
    parser.add_argument(
        "--no-brokers", action="store_true", help="skip benchmarks that start brokers and workers"
    )
    parser.add_argument(
        "--only",
        choices=sorted(ONLY),
        help="run one benchmark and replace its rows in the results file (the others are kept)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: rewrite docs/benchmarks.md from a results file (after editing "
        "benchmarks/analysis.md)",
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        _write_docs(saved["results"], saved["machine"], saved["load"])
        return
    load_before = os.getloadavg()
    started = time.monotonic()
    if args.only:
        _run_only(args)
        return
    rows = decode.run(quick=args.quick) + state.run(quick=args.quick)
    rows += metrics.run(quick=args.quick)
    if not args.no_brokers:
        with _brokers() as (redis_url, amqp_url):
            rows += ingest.run(quick=args.quick, redis_url=redis_url, amqp_url=amqp_url)
            rows += inspect_latency.run(quick=args.quick, redis_url=redis_url, amqp_url=amqp_url)
            rows += web.run(quick=args.quick, redis_url=redis_url)
            rows += concurrent_ping.run(quick=args.quick, redis_url=redis_url, amqp_url=amqp_url)
            rows += page.run(quick=args.quick, redis_url=redis_url)
        rows += history.run(quick=args.quick)  # starts its own PostgreSQL
    load_after = os.getloadavg()
    for r in rows:
        r.setdefault("ratio", r["ours"] / r["theirs"] if r["theirs"] else None)
        r["target"] = _target(r)
    import celery
    import kombu

    machine = (
        f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}, "
        f"{os.cpu_count() or 1} cores; celery {celery.__version__}, kombu {kombu.__version__}"
    )
    load = (
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({time.monotonic() - started:.0f} s{', --quick' if args.quick else ''}"
        f"{', --no-brokers' if args.no_brokers else ''}"
        f"{f', --only {args.only}: the other rows are from the previous run' if args.only else ''})"
    )
    if args.quick:  # a smoke run: print, never overwrite the published results
        print(_table(rows))
        return
    print(_write_docs(rows, machine, load))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "load": load, "results": rows}, indent=2) + "\n"
        )


def _with_redis(module: Any) -> Callable[[bool], list[dict[str, Any]]]:
    """A benchmark that runs against its own Redis."""

    def run(quick: bool) -> list[dict[str, Any]]:
        with brokers.redis_server() as redis:
            rows: list[dict[str, Any]] = module.run(quick=quick, redis_url=redis.url)
            return rows

    return run


#: ``--only NAME``: the benchmarks that can be rerun alone, merged into the saved results.
ONLY: dict[str, Callable[[bool], list[dict[str, Any]]]] = {
    "metrics": lambda quick: metrics.run(quick=quick),
    "history": lambda quick: history.run(quick=quick),  # starts its own PostgreSQL
    "page": _with_redis(page),
    "web": _with_redis(web),
}


def _run_only(args: argparse.Namespace) -> None:
    """``--only NAME``: that module's rows replace its rows (same group or same name) in the
    saved results."""
    new = ONLY[args.only](args.quick)
    for r in new:
        r.setdefault("ratio", r["ours"] / r["theirs"] if r["theirs"] else None)
        r["target"] = _target(r)
        r["group"] = args.only
    if args.quick:
        print(_table(new))
        return
    saved = json.loads(args.json.read_text())
    names = {r["name"] for r in new}
    kept = [r for r in saved["results"] if r.get("group") != args.only and r["name"] not in names]
    rows = kept + new
    note = f"; `--only {args.only}` rows rerun at load average {os.getloadavg()[0]:.2f}"
    load = saved["load"].split("; `--only")[0] + note
    print(_write_docs(rows, saved["machine"], load))
    args.json.write_text(
        json.dumps({"machine": saved["machine"], "load": load, "results": rows}, indent=2) + "\n"
    )


def _table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    header = (
        "| benchmark | aiocelerymon | Celery/kombu | ratio | target |\n|---|---:|---:|---:|---|"
    )
    lines = []
    for r in rows:
        note = f" ({r['note']})" if r.get("note") else ""
        theirs = "—" if r["theirs"] is None else f"{r['theirs']:,.0f} {r['unit']}"
        ratio = "—" if r.get("ratio") is None else f"{r['ratio']:.1f}x"
        lines.append(
            f"| {r['name']}{note} | {r['ours']:,.0f} {r['unit']} | {theirs} | {ratio} "
            f"| {r['target']} |"
        )
    return "\n".join([header, *lines])


def _write_docs(rows: list[dict[str, Any]], machine: str, load: str) -> str:
    """Rewrite docs/benchmarks.md; returns the results table."""
    table = _table(rows)
    analysis = ANALYSIS.read_text() if ANALYSIS.exists() else ""
    RESULTS.write_text(
        "# Benchmarks\n\n"
        "Run with `nox -s bench` (`python -m benchmarks [--no-brokers]`); it rewrites this file\n"
        "and `docs/benchmarks.json` (`--quick` only prints). Each row runs our code and\n"
        "Celery's on the same input in the same run. These are measurements, never test\n"
        "assertions.\n\n"
        f"## Results\n\nMachine: {machine}; {load}.\n\n{table}\n\n{METHOD}\n{analysis}"
    )
    return table


METHOD = """## Method

* **decode task.multi envelope**: a Redis pub/sub payload as a Celery worker publishes it
  (kombu envelope, base64 body, a `task.multi` list of 24 task events) turned into event
  dicts. Ours: `decode_envelope` + `codec.decode`. Celery's: what kombu's Redis channel does
  per message (`json.loads` of the envelope, base64, `kombu.serialization.loads`). Events/s,
  best of 5 rounds.
* **State**: received/started/succeeded for ~67k tasks from 4 workers (200k events), as the
  receiver hands them on, into `celery.events.state.State` and ours (and Flower's
  `EventsState` when flower is installed); CPU time of the feeding loop. The pre-built input
  is `gc.freeze()`-d for both sides, so full collections do not traverse 200k input dicts a
  receiver would never hold at once. Also the *singles* stream of the ingest rows
  (task-sent on).
* **Memory**: tracemalloc growth per retained finished task, once with the LRU not yet full
  (N tasks, max_tasks N) and once at steady state (2N tasks, max_tasks N).
* **ingest** (broker -> decode -> State, end to end; `benchmarks/ingest.py`): the same
  envelopes, built with our wire encoders (byte-for-byte what workers send), consumed by
  `client.events.receiver(handlers={"*": State.event})` and by Celery's
  `app.events.Receiver(handlers={"*": State.event})`, max_tasks 100k, each in its own
  subprocess measuring itself (events/s from the first event to the end marker; CPU µs per
  event = `time.process_time` of the consuming process over that span). *batched*: worker
  events (received/started/succeeded) in `task.multi` lists of 24, no task-sent. *singles*:
  task-sent on, one event per message. RabbitMQ: a durable non-exclusive `celeryev.<node>`
  queue bound by `#` (as Celery declares it with `event_queue_durable=True`,
  `event_queue_exclusive=False`, no TTL/expiry), pre-filled by kombu with the whole stream,
  then drained; each side drains its own queue holding the same stream (same task ids;
  timestamps taken when it is filled, as Celery's State warns about drift over 16 s). Redis:
  once the consumer's PSUBSCRIBE is live (`PUBSUB NUMPAT`), a separate process publishes the
  stream at full speed (all commands packed first, sent in large writes); the server's pub/sub
  output-buffer limit is lifted for these rows and put back afterwards. Pub/sub drops what a
  subscriber cannot take: a row says when a side got fewer events than were sent, or was
  disconnected.
* **task history** (`benchmarks/history.py`): the State rows' stream (received/started/
  succeeded, 50k tasks) through a Monitor's per-event path (State, listeners, hub) in chunks
  of 1,000 events with the loop free between chunks, the history writer on (SQLite file;
  PostgreSQL started like the test suite's) or off. *ingest with history*: events/s until the
  last event is applied; *history stored*: until the last row is committed. The "Celery/kombu"
  column is the same stream with the store off. Size on disk: the SQLite file (+WAL) or the
  PostgreSQL tables with their indexes and TOAST, over the tasks stored. *history query*: a
  million tasks written to an SQLite store (20 names, 8 workers, 2% failed), then each
  `/api/tasks` filter as the store runs it (a page of 100; the HTTP layer and the merge with
  the State are not included), 30 calls each, p50 and p95.
* **serve** (`benchmarks/web.py`): `aiocelerymon serve` and Flower 2.2 as subprocesses on one
  Redis, fed the *batched* stream at once (100k tasks, 300k events). Ingest: events/s until
  the last task shows SUCCESS in each server's `/api/task/info` (polled every 50 ms) and the
  server process's CPU µs per event (`/proc/<pid>/stat`); ours with 10 WebSocket subscribers
  to the whole stream, one never reading; Flower serves no push (none exists). Then
  `GET /api/tasks` p50/p95 over 30 calls (a page of 100; and filtered by state and sorted),
  each server's RSS, and `GET /api/workers?refresh=1` p50 with 3 real workers (Flower always
  waits its 1 s inspect timeout; ours returns when all three answered).
* **metrics** (`benchmarks/metrics.py`): CPU per event of the State stream above with the
  metrics listener on and off: ours (State, then State + `MetricsCollector`) against
  celery-exporter 0.11 (its receiver handlers: Celery's State + `prometheus_client`) and Celery's
  State alone. Scrape at 500 workers x 200 task types (one finished task each: 100,000 label
  sets, a heartbeat per worker): our `render()` against `generate_latest` of celery-exporter's
  registry, i.e. its `/metrics` body without the two 1 s inspect broadcasts its scrape also
  makes; once fresh and once with nothing changed since the previous scrape.
* **page** (`benchmarks/page.py`): the same two servers and stream, with Debian's Chromium
  (Playwright) on their pages. CPU µs per event of each server process while 10 tabs are open
  on its tasks page (ours live on its digest WebSocket; Flower's page polls nothing), from the
  first event until the last task is in its State; then the time from navigation until a fresh
  tab shows the first page of task rows, median of 5 loads, both holding the 100k tasks.
* **ping latency**: two real workers per broker; ours knows the workers (`expected=`) and
  returns when both answered, Celery's `app.control.ping(timeout=1.0)` always waits its
  timeout. Plus concurrent `inspect().ping()` calls/s on one client.
* **1,000 concurrent ping** (`benchmarks/concurrent_ping.py`): two real workers per broker;
  1,000 `client.control.ping(timeout=1)` at once on a fresh client (no reply queue or
  exchange declared yet), against 10 `app.control.ping(timeout=1.0)` one after the other on
  one Celery app (each waits its full timeout; from threads sharing the app they stalled on
  Redis). The share of calls both workers answered, and calls completed per second; the
  note says how many raised and, of ours that lack a worker, how many say so (`complete`
  False, `missing`) and how many do not (must be 0). Whether two workers keep up with 2,000
  pings in a second is theirs to say; that no result misstates it is ours.
"""


if __name__ == "__main__":
    sys.exit(main())
