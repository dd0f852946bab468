"""``aiocelerymon shell`` driven through a real pseudo-terminal, as an operator types into it.

A :class:`~aiocelerymon.testing.FakeWorker` on Redis answers remote control and sends heartbeats;
the shell must ``await`` a ping at top level, see the worker appear in ``state`` (its live
receiver), keep working after an error, and offer the ``-A`` app and its tasks by name.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from aiocelerymon import Client
from aiocelerymon.testing import BrokerNamespace, FakeWorker
from tests.support.celery_worker import APP_MODULE, REPO_ROOT, celery_env

pytestmark = pytest.mark.integration

DEADLINE = 30.0


class Terminal:
    """The shell on a pty: ``send`` a line, ``expect`` text within a deadline."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO_ROOT, close_fds=True
        )
        os.close(slave)
        self.seen = ""

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    async def expect(self, text: str, timeout: float = DEADLINE) -> str:
        """Off the loop: the FakeWorker must keep answering meanwhile."""
        return await asyncio.to_thread(self._expect, text, timeout)

    def _expect(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not seen within {timeout}s; got:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the other side closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"shell ended before {text!r}; got:\n{self.seen}")
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        index = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:index], self.seen[index:]
        return before

    def close(self) -> int:
        try:
            return self.proc.wait(DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


async def test_shell_awaits_at_top_level_with_live_state(
    redis_namespace: BrokerNamespace,
) -> None:
    url = redis_namespace.url
    env = celery_env({"broker_url": url, **redis_namespace.celery_config})
    argv = [sys.executable, "-m", "aiocelerymon", "-A", APP_MODULE, "shell"]
    async with (
        Client(url, **redis_namespace.client_options()) as client,
        FakeWorker(client, "fake-1@shell", freq=0.2),
    ):
        term = Terminal(argv, env)
        try:
            await term.expect(">>> ")
            # Top-level await, on the shell's own connection.
            term.send(
                "replies = await client.control.ping(timeout=5, destination=['fake-1@shell'])"
            )
            await term.expect(">>> ")
            term.send("print('PING', replies)")
            assert "fake-1@shell" in (await term.expect(">>> ")).split("PING", 1)[1]
            # state is fed by a live receiver while the prompt waits.
            term.send(
                "async def seen():\n"
                "    while 'fake-1@shell' not in state.workers: await asyncio.sleep(0.05)\n"
            )
            await term.expect(">>> ")
            term.send("await asyncio.wait_for(seen(), 20)")
            await term.expect(">>> ")
            term.send("print('ALIVE', [w.hostname for w in state.alive_workers()])")
            assert "ALIVE ['fake-1@shell']" in await term.expect(">>> ")
            # An error is a traceback, not the end of the session.
            term.send("1 / 0")
            assert "ZeroDivisionError" in await term.expect(">>> ")
            # The -A app and its tasks by short name, as in Celery's shell.
            term.send("print('TASK', add.name, app.main)")
            assert "TASK tests.integration.celery_app.add aiocelerymon_tests" in await term.expect(
                ">>> "
            )
            os.write(term.master, b"\x04")  # Ctrl-D
        finally:
            code = term.close()
    assert code == 0
