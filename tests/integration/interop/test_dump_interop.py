"""``aiocelerymon events --dump`` prints what ``celery events --dump`` prints, line for line.

Both dumpers watch the same real worker at the same time; the lines about one task are
compared after removing ``local_received`` (each receiver's own arrival time). Celery <= 5.5
prints naive UTC timestamps, 5.6+ adds ``+00:00``; that suffix is ignored too.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import uuid

import pytest

from aiocelerymon.testing import BrokerNamespace
from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env, celery_worker

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DEADLINE = 45.0


class Dumping:
    """A dumper subprocess whose output lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Dumping:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=REPO_ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))
            self._changed.set()

    async def wait_for(self, pattern: str) -> None:
        async with asyncio.timeout(DEADLINE):
            while not any(re.search(pattern, line) for line in self.lines):
                self._changed.clear()
                await self._changed.wait()

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


def _normalise(line: str) -> str:
    line = re.sub(r"local_received=[0-9.e+-]+(, )?", "", line)
    return line.replace("+00:00]", "]").rstrip(", ")


async def test_dump_lines_match_celerys(aiocelerymon_broker: BrokerNamespace) -> None:
    url = aiocelerymon_broker.url  # a vhost / database of this test's own
    env = celery_env({"broker_url": url})
    hostname = f"dump.{uuid.uuid4().hex[:6]}@interop"
    theirs_argv = [sys.executable, "-m", "celery", "-A", APP_MODULE, "events", "--dump"]
    ours_argv = [sys.executable, "-m", "aiocelerymon", "-A", APP_MODULE, "events", "--dump"]
    with celery_worker(url, hostname):
        async with Dumping(theirs_argv, env) as theirs, Dumping(ours_argv, env) as ours:
            # Both are live once each has printed a heartbeat of the worker (every 2 s).
            beat = re.escape(hostname) + r" \[.*\] heartbeat"
            await asyncio.gather(theirs.wait_for(beat), ours.wait_for(beat))
            task_id = await asyncio.to_thread(_send_add, url)
            done = re.escape(task_id) + r"\).* result="
            await asyncio.gather(theirs.wait_for(done), ours.wait_for(done))
    assert ours.lines[0] == theirs.lines[0] == "-> evdump: starting capture..."
    mine = [_normalise(line) for line in ours.lines if task_id in line]
    celerys = [_normalise(line) for line in theirs.lines if task_id in line]
    assert [line.split("] ")[1].split(":")[0] for line in mine] == [
        "task received",
        "task started",
        "task succeeded",
    ]
    assert mine == celerys


def _send_add(url: str) -> str:
    from celery import Celery

    app = Celery("sender", broker=url)
    try:
        return str(app.send_task(f"{APP_MODULE}.add", (2, 2)).id)
    finally:
        app.close()
