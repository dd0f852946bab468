"""Restart ``aiocelerymon serve`` (a real process, killed) and yesterday's failed task is still
there with its traceback: on real Redis, with the SQLite file and with PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import aiocelerymon

pytestmark = [pytest.mark.integration, pytest.mark.redis]

DEADLINE = 30.0
TRACEBACK = "Traceback (most recent call last):\n  File \"proj.py\", line 3\nKeyError: 'invoice-42'"


class Serve:
    """One ``aiocelerymon serve`` process; its URL once it printed it."""

    def __init__(self, broker: str, db: str, *extra: str) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AIOCELERYMON_", "FLOWER_"))
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aiocelerymon", "-b", broker, "serve", "--port", "0",
             "--db", db, *extra],
            stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.process.stderr is not None
        self.lines: list[str] = []
        self.url = ""
        deadline = time.monotonic() + DEADLINE
        while not self.url and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            self.url = match.group(1) if match else ""
        assert self.url, "".join(self.lines)
        self.http = httpx2.Client(base_url=self.url, timeout=10)

    def get(self, path: str, **params: Any) -> Any:
        return self.http.get(path, params=params)

    def wait(self, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not check():  # another process: polled, with a deadline
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)

    def kill(self) -> None:
        self.http.close()
        self.process.kill()
        self.process.wait(timeout=DEADLINE)
        assert self.process.stderr is not None
        self.process.stderr.close()

    def stop(self) -> int:
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=DEADLINE)
        assert self.process.stderr is not None
        self.lines.append(self.process.stderr.read())
        self.process.stderr.close()
        return code


async def send(broker: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    async with aiocelerymon.Client(broker) as client:
        d = client.events.dispatcher("worker1@host")
        for kind, fields in events:
            await d.send(kind, **fields)
        await d.flush()


def live(server: Serve, broker: str) -> None:
    """Wait until the server ingests: a probe task sent until it shows."""
    probe = f"probe-{uuid.uuid4().hex}"

    def seen() -> bool:
        asyncio.run(send(broker, [("task-received", {"uuid": probe, "name": "probe"})]))
        return server.get(f"/api/task/info/{probe}").status_code == 200

    server.wait(seen)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite3'}"  # tmp_path is absolute: 4 slashes
    else:
        yield request.getfixturevalue("postgres_url")


def test_yesterdays_failed_task_survives_a_killed_serve(redis_url: str, db: str, tmp_path: Path):

    yesterday = time.time() - 86400
    failed, ok = f"failed-{uuid.uuid4().hex}", f"ok-{uuid.uuid4().hex}"
    first = Serve(redis_url, db)
    try:
        live(first, redis_url)
        asyncio.run(send(redis_url, [
            ("task-received", {"uuid": failed, "name": "billing.charge", "args": "('acme',)",
                               "kwargs": "{'invoice': 42}", "timestamp": yesterday}),
            ("task-started", {"uuid": failed, "timestamp": yesterday + 1}),
            ("task-failed", {"uuid": failed, "exception": "KeyError('invoice-42')",
                             "traceback": TRACEBACK, "timestamp": yesterday + 2}),
            ("task-received", {"uuid": ok, "name": "billing.report", "timestamp": yesterday}),
            ("task-succeeded", {"uuid": ok, "result": "'done'", "runtime": 0.5,
                                "timestamp": yesterday + 3}),
        ]))  # fmt: skip

        def written() -> bool:
            info = first.get(f"/api/task/info/{failed}")
            writer = first.get("/api/history").json()["writer"]
            return (
                info.status_code == 200
                and info.json()["state"] == "FAILURE"
                and writer["pending"] == 0
                and writer["tasks_written"] >= 3
            )

        first.wait(written)
    finally:
        first.kill()  # SIGKILL: no goodbye, nothing flushed at exit

    # The restarted process keeps one task in memory: the others come from the store.
    second = Serve(redis_url, db, "--max-tasks", "1")
    try:
        about = second.get("/api/history").json()
        assert about["tasks"] >= 3
        assert about["warmed"] == 1
        downtime = [g for g in about["gaps"] if g["reason"] == "downtime"]
        assert downtime and downtime[0]["end"] > downtime[0]["start"]
        info = second.get(f"/api/task/info/{failed}")
        assert info.status_code == 200, info.text
        task = info.json()
        assert task["state"] == "FAILURE"
        assert task["traceback"] == TRACEBACK
        assert task["exception"] == "KeyError('invoice-42')"
        assert task["worker"] == "worker1@host"
        assert task["failed"] == pytest.approx(yesterday + 2)
        listed = second.get("/api/tasks", state="FAILURE").json()
        assert list(listed) == [failed]
        assert listed[failed]["traceback"] == TRACEBACK
        assert list(second.get("/api/tasks", search="invoice").json()) == [failed]
        assert list(second.get("/api/tasks", taskname="billing.report").json()) == [ok]
        timeline = second.get(f"/api/task/events/{failed}").json()["events"]
        assert [e["type"] for e in timeline] == ["task-received", "task-started", "task-failed"]
        # And it goes on ingesting into the same history.
        live(second, redis_url)
    finally:
        assert second.stop() == 0, "".join(second.lines)


def test_db_none_keeps_no_history(redis_url: str):
    server = Serve(redis_url, "none")
    try:
        assert server.get("/api/history").json() == {"store": None}
    finally:
        assert server.stop() == 0
