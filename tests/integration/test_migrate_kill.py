# ruff: noqa: F811 - fixtures imported from test_migrate_interop are parameters here
"""SIGKILL ``aiocelerymon migrate`` mid-stream, rerun it: every task id arrives at least once.

Between RabbitMQ and Redis in both directions, with task messages produced by Celery itself.
No worker is involved (the Celery version does not matter), so this runs once, not per minor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from aiocelerymon.testing import BrokerNamespace
from tests.integration.interop.test_migrate_interop import (  # noqa: F401 - fixtures
    DEADLINE,
    amqp_ns,
    drain,
    redis_ns,
    send,
    tool,
)
from tests.support.celery_worker import REPO_ROOT, celery_env

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("direction", ["redis-to-amqp", "amqp-to-redis"])
def test_sigkill_mid_stream_loses_nothing(
    direction: str, redis_ns: BrokerNamespace, amqp_ns: BrokerNamespace
) -> None:
    src, dst = (redis_ns, amqp_ns) if direction == "redis-to-amqp" else (amqp_ns, redis_ns)
    total = 300
    ids = send(src.url, total)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiocelerymon", "migrate", "-a", "-F", src.url, dst.url],
        cwd=REPO_ROOT,
        env=celery_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(f"Migrating task {total // 3}/"):
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: between any publish and its ack
    finally:
        proc.kill()
        proc.communicate(timeout=DEADLINE)
    rerun = tool("aiocelerymon", "migrate", "-a", src.url, dst.url)
    assert rerun.returncode == 0, rerun.stderr
    arrived = [d.headers["id"] for d in drain(dst.url)]
    assert set(arrived) == set(ids)  # every task at least once
    duplicates = len(arrived) - len(set(arrived))
    # At most the one in flight at the kill was sent twice, and the rerun said so.
    assert duplicates <= 1
    if duplicates:
        assert "redelivered by SOURCE" in rerun.stderr
    assert drain(src.url) == []
