"""A pytest run stopped by SIGTERM (a CI timeout or cancel) leaves no broker behind.

The servers the plugin starts run in sessions of their own; before the plugin handled SIGTERM
they kept running with parent 1, and their temp dirs stayed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from aiocelerymon.testing import brokers

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.amqp]

DEADLINE = 120.0

HANGING = """\
import pathlib
import time


def test_hangs_with_both_servers(redis_server, rabbit_server):
    assert redis_server.owned and rabbit_server.owned
    pathlib.Path("ready").write_text("ready")
    time.sleep(600)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # Field 4 of /proc/PID/stat is the parent (after the parenthesised name).
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    members.append(int(entry.name))
    return members


def test_sigterm_stops_the_servers_and_removes_their_dirs(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGING)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (brokers.REDIS_URL_ENV, brokers.AMQP_URL_ENV)
    }
    env[brokers.REQUIRE_ENV] = "1"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_hang.py"]
    if not any(
        ep.value == "aiocelerymon.testing.plugin" for ep in metadata.entry_points(group="pytest11")
    ):
        argv[3:3] = ["-p", "aiocelerymon.testing.plugin"]  # a checkout run: no entry point
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    groups: list[int] = []
    dirs: list[Path] = []
    try:
        deadline = time.monotonic() + DEADLINE
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the servers did not start"
            time.sleep(0.1)
        # Each server leads a session of its own, a child of the pytest process.
        groups = _children(proc.pid)
        dirs = [Path(os.readlink(f"/proc/{pid}/cwd")) for pid in groups]
        assert len(groups) == 2, groups
        assert all(d.name.startswith("aiocelerymon-") for d in dirs), dirs

        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == -signal.SIGTERM, output  # still dies of SIGTERM
        assert [pid for g in groups for pid in _group_members(g)] == []
        assert [d for d in dirs if d.exists()] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for group in groups:  # what a failed run left behind: started by this test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
