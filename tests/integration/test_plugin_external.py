"""The pytest plugin as a user runs it in CI: brokers given by URL, servers it did not start.

A user's project (a Celery app and the README's ``test_add``, taken from README.md as written)
is tested by a pytest subprocess whose ``AIOCELERYMON_REDIS_URL`` / ``AIOCELERYMON_AMQP_URL``
point at servers started here (by this session): to that pytest they are external, so it
isolates with a ``global_keyprefix`` on Redis and shares the given vhost on RabbitMQ. The run
must pass on both brokers, and the Redis database must be left as it was found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from aiocelerymon.testing import brokers
from aiocelerymon.testing.worker import CELERY_ENV

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.amqp]

README = Path(__file__).resolve().parents[2] / "README.md"
#: A database of its own on the session's server (0-15 are left for tests that pick one).
REDIS_DB = 7

APP = """\
from celery import Celery

app = Celery("proj")


@app.task(name="proj.add")
def add(x, y):
    return x + y
"""


def readme_test_add() -> str:
    """The README's ``test_add`` example, verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "async def test_add(" in b]
    return block


def keys(url: str) -> list[bytes]:
    conn = brokers._Resp(url)
    try:
        found: list[bytes] = conn.call("KEYS", "*")
        return sorted(found)
    finally:
        conn.close()


def test_readme_example_passes_against_external_brokers(
    tmp_path: Path, redis_server: brokers.RedisServer, rabbit_server: brokers.RabbitServer
) -> None:
    redis_url = redis_server.url_for(REDIS_DB)
    brokers._redis_flushdb(redis_url)
    vhost = rabbit_server.namespace()  # the CI service's vhost, as a user would be given one
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "celery_app.py").write_text(APP)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_proj.py").write_text(readme_test_add())
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\npythonpath = .\nasyncio_default_fixture_loop_scope = function\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CELERY_ENV}
    env.update(
        {
            brokers.REDIS_URL_ENV: redis_url,
            brokers.AMQP_URL_ENV: vhost.url,
            brokers.REQUIRE_ENV: "1",
            "PYTHONPATH": "",
        }
    )
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "tests"]
    if not any(ep.value == "aiocelerymon.testing.plugin" for ep in _pytest11()):
        argv[3:3] = ["-p", "aiocelerymon.testing.plugin"]  # a checkout run: no entry point
    try:
        result = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert re.search(r"\b2 passed\b", output), output
        assert "test_add[redis] PASSED" in output and "test_add[rabbitmq] PASSED" in output
        # Worker, producer and client all used the prefix, and the plugin removed its keys:
        # no `_kombu.binding.*`, queue or prefixed key is left in the user's database.
        assert keys(redis_url) == []
    finally:
        rabbit_server.release(vhost)


def _pytest11() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group="pytest11"))
