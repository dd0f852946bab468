"""The page in a real browser: ``aiocelerymon serve`` next to Flower 2.2, on one Redis stream.

Both servers run as subprocesses on the same app and broker and get the same event stream at
once (the ingest benchmark's *batched* stream). Debian's Chromium (Playwright, launched by its
path) opens their pages. Rows:

* **server CPU per event with 10 open pages**: 10 tabs on each server's tasks page (ours:
  ``#/tasks``, live over its WebSocket, refreshing the first page at most once a second;
  Flower: ``/tasks``, which polls nothing), then the stream; CPU µs per event of each server
  process (``/proc/<pid>/stat``) from the first event until the last task is in its State.
* **time until the tasks page is usable at N tasks**: a fresh tab, from navigation until the
  first page of rows is on screen (ours: ``#tasks-table`` rows; Flower: its DataTables rows
  from ``/tasks/datatable``), median of a few loads, both holding the same N tasks.

Measurements, not assertions; the browser shares the machine's 2 cores with the servers.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from benchmarks import ingest
from benchmarks.streams import task_events
from benchmarks.web import _cpu_seconds
from tests.support.web import Process, flower, serve, until

#: The names of this module's rows (``--only page`` replaces exactly these).
PREFIXES = ("page: ",)
PAGES = 10
DEADLINE = 900.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: What "usable" waits for on each side: the first row of the first page of tasks.
OURS_READY = "#tasks-table tbody tr[data-uuid]"
FLOWER_READY = "#tasks-table tbody tr td:not(.dataTables_empty)"


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _open_pages(context: Any, url: str, ready: str, count: int) -> list[Any]:
    pages = []
    for _ in range(count):
        page = context.new_page()
        page.goto(url, wait_until="commit")
        pages.append(page)
    for page in pages:
        page.wait_for_selector(ready, timeout=60_000)
    return pages


def _usable(context: Any, url: str, ready: str, runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        page = context.new_page()
        started = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_selector(ready, timeout=120_000)
        timings.append(time.perf_counter() - started)
        page.close()
    return timings


def _warm_up(servers: dict[str, Process], redis_url: str) -> None:
    """The stream's first 10 tasks first, so every page has rows before the measured run
    (the same ids: the full stream then brings them to the same state on both sides)."""
    thread = threading.Thread(target=ingest._publish_redis, args=(redis_url, "batched", 10))
    thread.start()
    thread.join(60)
    for proc in servers.values():
        until(lambda p=proc: httpx.get(p.url + "/api/tasks?limit=1").json(), bool, 60)


def run(*, quick: bool, redis_url: str) -> list[dict[str, Any]]:
    tasks = 10_000 if quick else 100_000
    runs = 3 if quick else 5
    events = tasks * 3
    config = {"broker_url": redis_url}
    last_id = None
    for _, ev in task_events(tasks, sent=False):
        last_id = ev["uuid"]
    pages = {"ours": "/#/tasks", "theirs": "/tasks"}
    ready = {"ours": OURS_READY, "theirs": FLOWER_READY}
    with (
        serve(config, "--max-tasks", "200000", "--inspect-timeout", "5") as ours,
        flower(config, "--max_tasks=200000") as theirs,
        ingest._unlimited_pubsub_buffer(redis_url),
        _browser() as browser,
    ):
        servers: dict[str, Process] = {"ours": ours, "theirs": theirs}
        until(lambda: ingest._numpat(redis_url), lambda n: n >= 2, 60)
        _warm_up(servers, redis_url)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(120_000)
        open_pages = {
            side: _open_pages(context, proc.url + pages[side], ready[side], PAGES)
            for side, proc in servers.items()
        }
        cpu0 = {k: _cpu_seconds(p.proc.pid) for k, p in servers.items()}
        started = time.monotonic()
        publisher = threading.Thread(
            target=ingest._publish_redis, args=(redis_url, "batched", tasks), daemon=True
        )
        publisher.start()
        cpu1: dict[str, float] = {}
        with httpx.Client(timeout=10) as http:
            while len(cpu1) < len(servers):
                for side, proc in servers.items():
                    if side in cpu1:
                        continue
                    try:
                        reply = http.get(f"{proc.url}/api/task/info/{last_id}")
                    except httpx.TimeoutException:
                        continue  # busy ingesting; what is measured is CPU, not latency
                    if reply.status_code == 200 and reply.json().get("state") == "SUCCESS":
                        cpu1[side] = _cpu_seconds(proc.proc.pid)
                        print(f"page bench: {side} has the stream", file=sys.stderr)
                if time.monotonic() - started > DEADLINE:
                    raise RuntimeError(f"ingest did not finish: {cpu1}")
                # The browser's event loop runs only inside Playwright calls: let it.
                open_pages["ours"][0].wait_for_timeout(50)
        publisher.join(60)
        for side_pages in open_pages.values():
            for page in side_pages:
                page.close()
        cpu_row = {
            "name": f"page: server CPU per event with {PAGES} open tasks pages, {events:,} "
            "events (lower is better)",
            "unit": "µs",
            "ours": (cpu1["ours"] - cpu0["ours"]) / events * 1e6,
            "theirs": (cpu1["theirs"] - cpu0["theirs"]) / events * 1e6,
        }
        cpu_row["ratio"] = cpu_row["theirs"] / cpu_row["ours"]
        usable = {
            side: statistics.median(_usable(context, proc.url + pages[side], ready[side], runs))
            for side, proc in servers.items()
        }
        usable_row = {
            "name": f"page: time until the tasks page is usable at {tasks:,} tasks, median "
            f"of {runs} loads (lower is better)",
            "unit": "ms",
            "ours": usable["ours"] * 1e3,
            "theirs": usable["theirs"] * 1e3,
        }
        usable_row["ratio"] = usable_row["theirs"] / usable_row["ours"]
        context.close()
    return [cpu_row, usable_row]
