"""The web monitor: ``aiocelerymon serve`` next to Flower 2.2, on the same Redis stream.

Both servers run as real subprocesses on one Redis (the same app, the same broker) and
receive the same event stream at once (the ingest benchmark's *batched* stream, published at
full speed on pub/sub with the output-buffer limit lifted). Rows:

* **ingest with push subscribers**: events/s until the last task is in the server's State
  (its ``/api/task/info`` says SUCCESS; polled every 50 ms) and CPU µs per event of the server
  process (``/proc/<pid>/stat`` utime+stime over that span). Ours has 10 WebSocket
  subscribers to the whole stream, one of which never reads; Flower has no push API (it
  removed it in 1.1), so it serves none.
* **GET /api/tasks p50/p95 at 100k tasks**: a page of 100 (``limit=100``), and the same page
  filtered and sorted (``state=SUCCESS&sort_by=-received``), once both hold 100k tasks.
* **RSS at 100k tasks**: the server process's resident set (``VmRSS``) at that point.
* **GET /api/workers?refresh=1** with 3 real Celery workers: p50 over a few calls.

Measurements, not assertions; the machine is shared, so read the ratios, not the digits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from benchmarks import ingest
from benchmarks.streams import task_events
from tests.support.celery_worker import celery_worker
from tests.support.web import Process, flower, serve, until

#: The names of this module's rows (``--only web`` replaces exactly these).
PREFIXES = ("serve ingest", "GET /api/tasks at", "RSS at", "GET /api/workers?refresh=1")
SUBSCRIBERS = 10
PAGE = {"limit": "100"}
FILTERED = {"limit": "100", "state": "SUCCESS", "sort_by": "-received"}
DEADLINE = 600.0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) < 2:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]


def _stalled(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/events/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock


@contextlib.contextmanager
def _subscribers(url: str, count: int) -> Iterator[list[int]]:
    """``count - 1`` WebSocket clients reading everything, one reading nothing."""
    from websockets.sync.client import connect

    stop = threading.Event()
    received = [0] * (count - 1)
    # No client keepalive: a starved reader thread must not hang up and skew the load.
    conns = [
        connect(url.replace("http://", "ws://") + "/api/events/ws", ping_interval=None)
        for _ in received
    ]

    def read(i: int) -> None:
        while not stop.is_set():
            try:
                conns[i].recv(timeout=1.0)
            except TimeoutError:
                continue  # nothing yet: the stream has not started
            except Exception:
                return
            received[i] += 1

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(conns))]
    for t in threads:
        t.start()
    stalled = _stalled(url)
    try:
        yield received
    finally:
        stop.set()
        stalled.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        for t in threads:
            t.join(5)


def _latencies(base: str, params: dict[str, str], runs: int) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=DEADLINE) as http:
        http.get("/api/tasks", params=params).raise_for_status()  # warm-up
        for _ in range(runs):
            started = time.perf_counter()
            http.get("/api/tasks", params=params).raise_for_status()
            out.append(time.perf_counter() - started)
    return out


def _ingest_rows(redis_url: str, tasks: int, runs: int) -> list[dict[str, Any]]:
    config = {"broker_url": redis_url}
    events = tasks * 3
    last_id = None
    for _, ev in task_events(tasks, sent=False):
        last_id = ev["uuid"]
    with (
        # History off: Flower keeps none either (benchmarks/history.py measures the store).
        serve(config, "--max-tasks", "100000", "--inspect-timeout", "5", "--db", "none") as ours,
        # Flower may still be busy when we are done with it: killed, not waited for.
        flower(config, "--max_tasks=100000", strict=False) as theirs,
        _subscribers(ours.url, SUBSCRIBERS) as received,
        ingest._unlimited_pubsub_buffer(redis_url),
    ):
        # Both subscribed (their event queues bound) before the stream starts.
        until(lambda: ingest._numpat(redis_url), lambda n: n >= 2, 60)
        servers: dict[str, Process] = {"ours": ours, "theirs": theirs}
        cpu0 = {k: _cpu_seconds(p.proc.pid) for k, p in servers.items()}
        started = time.monotonic()
        publisher = threading.Thread(
            target=ingest._publish_redis, args=(redis_url, "batched", tasks), daemon=True
        )
        publisher.start()
        done: dict[str, float] = {}
        cpu1: dict[str, float] = {}
        with httpx.Client(timeout=60) as http:
            while len(done) < len(servers):
                for side, proc in servers.items():
                    if side in done:
                        continue
                    reply = http.get(f"{proc.url}/api/task/info/{last_id}")
                    if reply.status_code == 200 and reply.json().get("state") == "SUCCESS":
                        done[side] = time.monotonic() - started
                        cpu1[side] = _cpu_seconds(proc.proc.pid)
                if time.monotonic() - started > DEADLINE:
                    raise RuntimeError(f"ingest did not finish: {done}")
                time.sleep(0.05)
        publisher.join(60)
        rows: list[dict[str, Any]] = []
        note = f"{tasks:,} tasks; ours with {SUBSCRIBERS} WebSocket subscribers, 1 stalled"
        rows.append({
            "name": f"serve ingest, {events:,} events ({note})", "unit": "events/s",
            "ours": events / done["ours"], "theirs": events / done["theirs"],
        })  # fmt: skip
        rows.append({
            "name": f"serve ingest, {events:,} events, CPU per event (lower is better)",
            "unit": "µs",
            "ours": (cpu1["ours"] - cpu0["ours"]) / events * 1e6,
            "theirs": (cpu1["theirs"] - cpu0["theirs"]) / events * 1e6,
        })  # fmt: skip
        rows[-1]["ratio"] = rows[-1]["theirs"] / rows[-1]["ours"]
        for label, params in (("a page of 100", PAGE), ("state + sort, page of 100", FILTERED)):
            mine = _latencies(ours.url, params, runs)
            flowers = _latencies(theirs.url, params, runs)
            for q in (0.5, 0.95):
                row = {
                    "name": f"GET /api/tasks at {tasks:,} tasks, {label}, p{round(q * 100)} "
                    "(lower is better)",
                    "unit": "ms",
                    "ours": _percentile(mine, q) * 1e3,
                    "theirs": _percentile(flowers, q) * 1e3,
                }
                row["ratio"] = row["theirs"] / row["ours"]
                rows.append(row)
        rss = {k: _rss_bytes(p.proc.pid) for k, p in servers.items()}
        rows.append({
            "name": f"RSS at {tasks:,} tasks (lower is better)", "unit": "MiB",
            "ours": rss["ours"] / 2**20, "theirs": rss["theirs"] / 2**20,
            "ratio": rss["theirs"] / rss["ours"],
        })  # fmt: skip
        assert max(received) > 0, "the reading subscribers got nothing"
    return rows


def _refresh_rows(redis_url: str, runs: int) -> list[dict[str, Any]]:
    config = {"broker_url": redis_url}
    names = [f"web-bench-{i}@bench" for i in range(3)]
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(celery_worker(redis_url, name, events=True, config=config))
        ours = stack.enter_context(serve(config, "--inspect-timeout", "5", "--db", "none"))
        theirs = stack.enter_context(flower(config, strict=False))
        for proc in (ours, theirs):
            until(
                lambda p=proc: httpx.get(p.url + "/api/workers?status=1").json(),
                lambda s: set(names) <= set(s),
                60,
            )
        timings: dict[str, list[float]] = {"ours": [], "theirs": []}
        for side, proc in (("ours", ours), ("theirs", theirs)):
            with httpx.Client(base_url=proc.url, timeout=60) as http:
                for _ in range(runs):
                    started = time.perf_counter()
                    reply = http.get("/api/workers", params={"refresh": "1"})
                    timings[side].append(time.perf_counter() - started)
                    assert set(names) <= set(reply.json()), reply.text[:500]
    row = {
        "name": "GET /api/workers?refresh=1, 3 workers, p50 (lower is better)",
        "unit": "ms",
        "ours": statistics.median(timings["ours"]) * 1e3,
        "theirs": statistics.median(timings["theirs"]) * 1e3,
    }
    row["ratio"] = row["theirs"] / row["ours"]
    return [row]


def run(*, quick: bool, redis_url: str) -> list[dict[str, Any]]:
    tasks = 10_000 if quick else 100_000
    runs = 5 if quick else 30
    rows = _ingest_rows(redis_url, tasks, runs)
    rows += _refresh_rows(redis_url, 3 if quick else 10)
    return rows
